"""Small image tasks for CPU experiments: a square on a grid that jumps at random, or wanders.

:class:`JumpingDotEnv` tests a world model's prior. The agent moves the dot left or right; every step
it also jumps ``jump`` cells up or down (wrapping around) with equal probability, so the next frame
is bimodal (``outcomes=4`` or ``8`` adds left / right and diagonal jumps). A world model must put its
probability on one dot in one of the places: a prior whose latent tokens are independent given ``h_t``
(STORM's, or MaskGIT drawn in one pass) can only match the modes token by token, and its samples mix
them (no dot, or two half dots); MaskGIT decoding the tokens in several chunks can keep them
consistent. :meth:`JumpingDotEnv.feasible` tells from a (decoded) frame whether it can follow the
previous one. The reward is 1 for every step that ends with the dot in a rewarding column (tinted; by
default the right half, where walking right and staying there is optimal with up / down jumps): with
sideways jumps and ``reward_columns`` in the middle, the best action depends on where the dot is and on
where it may jump, so an agent needs a model that imagines the outcomes right.

:class:`WhichHalfEnv` tests an agent: the square wanders at random and the reward is for naming the
half of the frame it is in, so the action must follow the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SquareOnGridEnv(gym.Env):
    """RGB ``(size, size, 3)`` uint8 frames of a white square filling one cell of a ``cells x cells``
    grid, at a random cell after ``reset``; ``Discrete(3)`` actions; episodes truncated after
    ``max_steps`` steps. Subclasses define ``step`` (and may tint the background)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012  # gymnasium.Env declares it

    def __init__(self, size: int, cells: int, max_steps: int, render_mode: str | None = None) -> None:
        if size % cells != 0:
            raise ValueError(f"size ({size}) must be a multiple of cells ({cells})")
        self.size, self.cells, self.max_steps = size, cells, max_steps
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Discrete(3)

    def _background(self) -> np.ndarray:
        return np.zeros((self.size, self.size, 3), np.uint8)

    def _obs(self) -> np.ndarray:
        frame = self._background()
        side = self.size // self.cells
        y, x = self.cell * side
        frame[y : y + side, x : x + side] = 255
        return frame

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cell = self.np_random.integers(0, self.cells, size=2)
        self.t = 0
        return self._obs(), {}

    def render(self) -> np.ndarray:
        return self._obs()


class JumpingDotEnv(SquareOnGridEnv):
    """RGB ``(size, size, 3)`` uint8 frames, ``Discrete(3)`` actions (left, stay, right).

    The action moves the dot one cell left or right (stopping at the border), then the dot jumps
    ``jump`` cells in one of ``outcomes`` directions drawn uniformly (wrapping around the grid).

    Parameters
    ----------
    size : int
        Side of the frame in pixels; must be a multiple of ``cells``.
    cells : int
        The dot moves on a ``cells x cells`` grid; it fills one cell.
    jump : int
        Cells the dot jumps every step.
    outcomes : int
        Directions of the jump: 2 (up or down), 4 (and left or right) or 8 (and the diagonals).
    max_steps : int
        Episodes are truncated after this many steps (there is no termination).
    reward_columns : sequence of int, optional
        The columns of the grid where the dot earns a reward of 1 (the others 0); the right half by default.
    late_reward : bool
        Pay a step for the column the dot *starts* it in, not the one it lands in: the reward of an action and
        its random outcome arrives one step later, so a world model has to imagine the outcome to predict it.
    """

    # Jump directions (rows, columns); the first ``outcomes`` of them are drawn.
    DIRECTIONS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)])
    OUTCOMES = (2, 4, 8)

    def __init__(
        self,
        size: int = 32,
        cells: int = 8,
        jump: int = 2,
        max_steps: int = 100,
        render_mode: str | None = None,
        outcomes: int = 2,
        reward_columns: Sequence[int] | None = None,
        late_reward: bool = False,
    ) -> None:
        if outcomes not in self.OUTCOMES:
            raise ValueError(f"outcomes must be one of {self.OUTCOMES}, got {outcomes}")
        super().__init__(size, cells, max_steps, render_mode)
        columns = range(cells // 2, cells) if reward_columns is None else reward_columns
        if not columns or not set(columns) <= set(range(cells)):
            raise ValueError(f"reward_columns must be some of the grid's columns 0..{cells - 1}, got {reward_columns}")
        self.rewarding = np.isin(np.arange(cells), list(columns))
        self.jump, self.outcomes, self.late_reward = jump, outcomes, late_reward
        self.offsets = jump * self.DIRECTIONS[:outcomes]
        if len(self.targets((0, cells // 2), 1)) != outcomes:
            raise ValueError(f"a jump of {jump} cells on a grid of {cells} cells does not reach {outcomes} distinct cells")

    def _background(self) -> np.ndarray:
        frame = super()._background()
        frame[:, np.repeat(self.rewarding, self.size // self.cells), 2] = 64  # the rewarding columns are tinted
        return frame

    def _moved(self, cell: tuple[int, int] | np.ndarray, action: int) -> np.ndarray:
        """The cell after the action, before the jump."""
        return np.array([cell[0], np.clip(cell[1] + int(action) - 1, 0, self.cells - 1)])

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        offset = self.offsets[self.np_random.integers(self.outcomes)]
        start_column = self.cell[1]
        self.cell = (self._moved(self.cell, action) + offset) % self.cells
        self.t += 1
        reward = float(self.rewarding[start_column if self.late_reward else self.cell[1]])
        return self._obs(), reward, False, self.t >= self.max_steps, {}

    def targets(self, cell: tuple[int, int] | np.ndarray, action: int) -> set[tuple[int, int]]:
        """The ``outcomes`` cells ``(row, column)`` the dot can be in one step after ``cell`` and ``action``."""
        moved = self._moved(cell, action)
        return {(int(y), int(x)) for y, x in (moved + self.offsets) % self.cells}

    def locate(self, frame: np.ndarray, threshold: float = 0.5) -> tuple[int, int] | None:
        """The cell ``(row, column)`` of the one dot a frame shows, or None if it shows no clean single dot.

        A pixel is lit when all its channels exceed ``threshold`` (the dot is white; the tinted half
        only has blue). The frame shows a dot in a cell when at least 3/4 of the cell's pixels are lit
        and at most a quarter of a cell's worth of pixels is lit anywhere else: no dot, two half dots
        or a dot smeared over two cells are None.

        Parameters
        ----------
        frame : np.ndarray
            Channel-first ``(3, H, W)`` floats in [0, 1] (as the world model decodes them), ``H`` and ``W``
            multiples of ``cells``.
        """
        channels, height, width = frame.shape
        if channels != 3 or height % self.cells or width % self.cells:
            raise ValueError(f"frame must be (3, H, W) with H and W multiples of cells ({self.cells}), got {frame.shape}")
        lit = (np.asarray(frame) > threshold).all(0)
        counts = lit.reshape(self.cells, height // self.cells, self.cells, width // self.cells).sum((1, 3))
        area = lit.size / self.cells**2
        y, x = np.unravel_index(counts.argmax(), counts.shape)
        if counts[y, x] < 0.75 * area or counts.sum() - counts[y, x] > 0.25 * area:
            return None
        return int(y), int(x)

    def feasible(self, previous: np.ndarray, action: int, frame: np.ndarray) -> bool:
        """Whether ``frame`` can follow ``previous`` after ``action``: both show one clean dot (:meth:`locate`),
        and the dot of ``frame`` is in one of the :meth:`targets` of the dot of ``previous``.

        A pure function of the two frames and the action (the environment's state is not used).

        Parameters
        ----------
        previous, frame : np.ndarray
            Channel-first ``(3, H, W)`` floats in [0, 1].
        action : int
            The action taken at ``previous``.
        """
        start, end = self.locate(previous), self.locate(frame)
        return start is not None and end is not None and end in self.targets(start, action)


class WhichHalfEnv(SquareOnGridEnv):
    """A reactive pixel task: say which half of the frame a wandering square is in.

    The square moves one cell up, down, left or right at random every step (staying inside the
    frame). Actions: 0 "left half", 1 "right half", 2 "pass"; the reward is 1 for naming the half the
    square is in, 0 otherwise. No constant policy does better than about half the maximum, and
    uniformly random actions get a third of it; the optimum (``max_steps``) needs the action to
    follow the frame.

    Parameters
    ----------
    size : int
        Side of the frame in pixels; a multiple of ``cells``.
    cells : int
        The square moves on a ``cells x cells`` grid and fills one cell; an even number (two halves).
    max_steps : int
        Episodes are truncated after this many steps (there is no termination).
    """

    MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])

    def __init__(self, size: int = 64, cells: int = 8, max_steps: int = 100, render_mode: str | None = None) -> None:
        if cells % 2 != 0:
            raise ValueError(f"cells ({cells}) must be even: the frame has two halves")
        super().__init__(size, cells, max_steps, render_mode)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        right = int(self.cell[1] >= self.cells // 2)
        reward = float(int(action) == right)
        self.cell = np.clip(self.cell + self.MOVES[self.np_random.integers(4)], 0, self.cells - 1)
        self.t += 1
        return self._obs(), reward, False, self.t >= self.max_steps, {}

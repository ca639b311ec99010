"""Divergence guard: updates with non-finite losses or gradients are skipped instead of corrupting the weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch as th
from stable_baselines3.common.logger import Logger
from torch import nn

# (loss, its optimiser, the module it trains, the gradient-norm clip)
Step = tuple[th.Tensor, th.optim.Optimizer, nn.Module, float]

MAX_NAMES = 5  # parameters named in a message


def buffer_rollback(module: nn.Module) -> Callable[[], None]:
    """A rollback that puts every buffer of ``module`` back as it is now.

    Taken before a forward pass in train mode, which changes buffers in place (BatchNorm's running
    statistics and ``num_batches_tracked``): a skipped update then leaves them as they were.
    """
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]

    def rollback() -> None:
        with th.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)

    return rollback


class DivergenceGuard:
    """Skips and counts the updates whose losses or gradients are NaN or infinite.

    A skipped update leaves the weights and the optimiser states as they were (no backward pass
    for a non-finite loss, gradients dropped for a non-finite gradient norm); what the forward pass
    itself changed is put back by a ``rollback`` (:func:`buffer_rollback`). Updates are counted
    per part (``"world_model"``, ``"actor_critic"``): in total, for the logs, and in a row, to stop
    a run that does not recover.
    """

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        self.consecutive: dict[str, int] = {}

    def step(
        self,
        part: str,
        update: int,
        losses: dict[str, th.Tensor],
        steps: Sequence[Step],
        max_skips: int,
        rollback: Callable[[], object] | None = None,
    ) -> bool:
        """Back-propagate, clip and step every optimiser of ``steps``, unless something is not finite.

        Parameters
        ----------
        part : str
            What is updated (``"world_model"``, ``"actor_critic"``), for the counters and messages.
        update : int
            The update's index (``_n_updates``), for the messages.
        losses : dict of str to th.Tensor
            Every loss and loss component to check, by name (the losses of ``steps`` among them).
        steps : sequence of (loss, optimizer, module, max_grad_norm)
            The optimiser steps of the update: all of them are taken, or none.
        max_skips : int
            Raise once this many updates of ``part`` in a row have been skipped.
        rollback : callable, optional
            Called when the update is skipped, to undo what computing the losses changed (e.g.
            running statistics).

        Returns
        -------
        bool
            Whether the optimisers stepped.

        Raises
        ------
        RuntimeError
            After ``max_skips`` consecutive skips, naming the non-finite losses or parameter gradients.
        """
        for _, optimizer, _, _ in steps:
            optimizer.zero_grad(set_to_none=True)
        problem = self._non_finite_losses(losses) or self._backward(steps)
        self.skipped.setdefault(part, 0)
        if problem is None:
            for _, optimizer, _, _ in steps:
                optimizer.step()
            self.consecutive[part] = 0
            return True
        for _, optimizer, _, _ in steps:
            optimizer.zero_grad(set_to_none=True)
        if rollback is not None:
            rollback()
        self.skipped[part] += 1
        self.consecutive[part] = self.consecutive.get(part, 0) + 1
        if self.consecutive[part] >= max_skips:
            name = part.replace("_", "-")
            raise RuntimeError(
                f"GITSTORM stopped: {self.consecutive[part]} {name} updates in a row were skipped, the last one "
                f"(update {update}) because {problem}. The {name} weights are those from before the first of them. "
                "Lower the learning rates or gradient clips, check the environment, or raise max_nonfinite_skips."
            )
        return False

    def skipped_last(self, part: str) -> bool:
        """Whether the last update of ``part`` was skipped."""
        return self.consecutive.get(part, 0) > 0

    @staticmethod
    def _non_finite_losses(losses: dict[str, th.Tensor]) -> str | None:
        finite = th.stack([th.isfinite(value).all() for value in losses.values()]).tolist()  # one device sync
        bad = [name for name, ok in zip(losses, finite, strict=True) if not ok]
        return f"the loss was not finite in {', '.join(bad)}" if bad else None

    @staticmethod
    def _backward(steps: Sequence[Step]) -> str | None:
        """Back-propagate and clip every loss; what is not finite in the gradients, if anything."""
        bad: list[str] = []
        for loss, _, module, max_grad_norm in steps:
            loss.backward()
            # Checked before clipping, which would spread one tensor's NaN over all of them.
            grads = [(f"{type(module).__name__}.{n}", p.grad) for n, p in module.named_parameters() if p.grad is not None]
            finite = th.stack([th.isfinite(grad).all() for _, grad in grads]).tolist()
            bad += [name for (name, _), ok in zip(grads, finite, strict=True) if not ok]
            if all(finite) and not th.isfinite(nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)):
                bad.append(f"{type(module).__name__} (the gradient norm overflowed)")
        if not bad:
            return None
        names = ", ".join(bad[:MAX_NAMES]) + (f" and {len(bad) - MAX_NAMES} more" if len(bad) > MAX_NAMES else "")
        return f"the gradient was not finite in {names}"

    def record(self, logger: Logger) -> None:
        """Log the skipped updates so far as ``train/skipped_<part>_updates``."""
        for part, count in self.skipped.items():
            logger.record(f"train/skipped_{part}_updates", count)

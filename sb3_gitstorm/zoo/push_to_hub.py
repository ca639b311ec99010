"""``python -m sb3_gitstorm.zoo.push_to_hub --algo gitstorm --env CartPole-v1 -f logs -orga <user>``: rl_zoo3's ``push_to_hub``.

Takes every argument of ``python -m rl_zoo3.push_to_hub``: evaluates the trained agent (10 episodes),
records a video of it unless ``--no-render``, writes the model, its ``config.yml`` / ``args.yml`` /
``env_kwargs.yml``, the training curves and a model card (README.md) to ``hub/<repo name>`` and uploads
that folder to ``<user>/gitstorm-CartPole-v1`` (log in first: ``huggingface-cli login``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

from sb3_gitstorm.zoo import run_zoo_script


@contextlib.contextmanager
def generate_metadata_available() -> Iterator[None]:
    """Within the block, ``huggingface_sb3.push_to_hub.generate_metadata`` exists, as rl_zoo3's ``push_to_hub`` imports it.

    sb3-team-hf-integration 3.x, the ``huggingface_sb3`` that rl_zoo3 2.9 depends on, renamed it
    ``_generate_metadata`` and made it return a ``ModelCardData``; rl_zoo3 wants the dict.
    """
    module = importlib.import_module("huggingface_sb3.push_to_hub")  # the module: the package's attribute is the function
    if hasattr(module, "generate_metadata"):
        yield
        return

    def generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
        return module._generate_metadata(model_name, env_id, mean_reward, std_reward).to_dict()

    with mock.patch.object(module, "generate_metadata", generate_metadata, create=True):
        yield


def main(argv: list[str]) -> None:
    """Run rl_zoo3's ``push_to_hub`` with ``argv``."""
    with generate_metadata_available():
        run_zoo_script("push_to_hub", argv)


if __name__ == "__main__":
    main(sys.argv[1:])

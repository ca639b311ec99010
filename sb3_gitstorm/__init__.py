"""sb3_gitstorm: GIT-STORM world-model agents for Stable-Baselines3.

>>> from sb3_gitstorm import GITSTORM
>>> model = GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="tiny")).learn(5_000)
"""

import sb3_gitstorm.envs  # noqa: F401  (registers the gitstorm/ gymnasium ids, as ale_py does for ALE/)
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.gitstorm import GITSTORM
from sb3_gitstorm.policies import CnnPolicy, GITSTORMPolicy, MlpPolicy

__version__ = "0.1.0"

__all__ = ["GITSTORM", "CnnPolicy", "GITSTORMPolicy", "MlpPolicy", "ModelConfig", "__version__"]

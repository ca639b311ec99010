"""benchmarks/official_speed.py: its CPU shims for the official code and an end-to-end run against a stand-in
checkout with the official code's interfaces (the real code is fetched, not shipped)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import textwrap

import torch as th

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("official_speed", ROOT / "benchmarks" / "official_speed.py")
official_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(official_speed)

# The official code's interfaces, with what it does that needs a shim on a CPU: tensors made on "cuda",
# Tensor.cuda(), bf16 buffers while use_amp is on, and an entropy coefficient written 3E-4 in its YAML.
STAND_IN = {
    "config_files/STORM.yaml": """
        Models:
          WorldModel: {InChannels: 3, TransformerMaxLength: 64, TransformerHiddenDim: 8, TransformerNumLayers: 1,
                       TransformerNumHeads: 1}
          Agent: {NumLayers: 1, HiddenDim: 8, Gamma: 0.985, Lambda: 0.95, EntropyCoef: 3E-4}
        """,
    "agents.py": """
        import torch
        class ActorCriticAgent(torch.nn.Module):
            def __init__(self, feat_dim, num_layers, hidden_dim, action_dim, gamma, lambd, entropy_coef):
                super().__init__()
                self.use_amp, self.entropy_coef = True, entropy_coef
                self.actor = torch.nn.Linear(feat_dim, action_dim)
            def update(self, latent, action, old_logprob, old_value, reward, termination, logger=None):
                loss = self.actor(latent).mean() * torch.ones(1).cuda() - self.entropy_coef * reward.mean()
                loss.backward()
        """,
    "replay_buffer.py": """
        import numpy as np, torch
        class ReplayBuffer:
            def __init__(self, obs_shape, num_envs, max_length, warmup_length, store_on_gpu=False):
                self.obs = []
            def append(self, obs, action, reward, termination):
                self.obs.append(obs[0])
            def sample(self, batch_size, external_batch_size, batch_length, to_device="cuda"):
                starts = np.random.randint(0, len(self.obs) + 1 - batch_length, size=batch_size)
                obs = torch.from_numpy(np.stack([self.obs[s : s + batch_length] for s in starts])).float().cuda() / 255
                zeros = torch.zeros(batch_size, batch_length, device="cuda")
                return obs.permute(0, 1, 4, 2, 3), zeros, zeros, zeros
        """,
    "sub_models/world_models.py": """
        import torch
        import agents
        class WorldModel(torch.nn.Module):
            def __init__(self, in_channels, action_dim, transformer_max_length, transformer_hidden_dim,
                         transformer_num_layers, transformer_num_heads):
                super().__init__()
                self.use_amp, self.tensor_dtype, self.features = True, torch.bfloat16, 32 * 32 + transformer_hidden_dim
                self.encoder = torch.nn.Linear(3 * 64 * 64, 4)
            def update(self, obs, action, reward, termination, logger=None):
                assert obs.shape[1:] == (64, 3, 64, 64)
                self.encoder(obs.flatten(2)).pow(2).mean().backward()
            def imagine_data(self, agent, sample_obs, sample_action, imagine_batch_size, imagine_batch_length,
                             log_video, logger):
                assert isinstance(agent, agents.ActorCriticAgent) and not self.training and sample_obs.shape[1] == 8
                size = (imagine_batch_size, imagine_batch_length + 1, self.features)
                latent = torch.zeros(size, dtype=self.tensor_dtype, device="cuda")
                scalars = torch.zeros(imagine_batch_size, imagine_batch_length, dtype=self.tensor_dtype, device="cuda")
                return latent, scalars, scalars, scalars
        """,
}


def write_checkout(path: pathlib.Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(textwrap.dedent(text))
    return str(path)


def test_cuda_to_cpu_makes_cuda_tensors_on_the_cpu() -> None:
    """Inside the mode, device="cuda" factories and Tensor.cuda() give CPU tensors; other devices are left alone."""
    with official_speed.CudaToCpu():
        made = [th.zeros(2, device="cuda"), th.empty((1, 3), dtype=th.uint8, device=th.device("cuda", 0))]
        moved = th.ones(3).cuda()
        meta = th.zeros(2, device="meta")
    assert [t.device.type for t in made] == ["cpu", "cpu"] and made[1].dtype == th.uint8
    assert moved.device.type == "cpu" and th.equal(moved, th.ones(3)) and meta.device.type == "meta"


def test_checkouts_with_the_same_module_names_import_side_by_side(tmp_path: pathlib.Path) -> None:
    """STORM and GIT-STORM both have top-level agents / sub_models: each import sees its own siblings and
    leaves nothing of them in sys.modules."""
    loaded = []
    for name in ("storm", "gitstorm"):
        files = {"agents.py": f"NAME = {name!r}", "sub_models/world_models.py": "import agents\nNAME = agents.NAME"}
        loaded.append(official_speed.import_checkout(write_checkout(tmp_path / name, files), ["sub_models.world_models"]))
    assert [m["sub_models.world_models"].NAME for m in loaded] == ["storm", "gitstorm"]
    assert "agents" not in sys.modules and "sub_models" not in sys.modules


def test_config_strings_are_read_as_their_loaders_read_them() -> None:
    conf = official_speed.namespace({"Agent": {"EntropyCoef": "3E-4", "Gamma": 0.985}, "env": "ALE/Boxing-v5"})
    assert conf.Agent.EntropyCoef == 3e-4 and conf.Agent.Gamma == 0.985 and conf.env == "ALE/Boxing-v5"


def test_runs_interleaved_against_a_stand_in_checkout(tmp_path: pathlib.Path) -> None:
    """End to end at tiny batches: the official step runs on a CPU through the shims and the report holds
    one time per timed round and the ours / theirs ratios."""
    storm = write_checkout(tmp_path / "storm", STAND_IN)
    out = tmp_path / "speed.json"
    argv = ["--storm-path", storm, "--ours", "mlp:replay", "--size", "tiny", "--quick", "--repeats", "2", "--json", str(out)]
    official_speed.main(argv)
    report = json.loads(out.read_text())
    assert set(report["times"]) == {"sb3_gitstorm mlp:replay", "STORM"}
    assert all(len(t["cpu"]) == len(t["wall"]) == 2 for t in report["times"].values())
    ratio = report["ratios"]["sb3_gitstorm mlp:replay / STORM"]
    assert ratio["cpu_per_round_min"] <= ratio["cpu_per_round_max"] and ratio["wall"] > 0
    assert report["machine"]["torch_threads"] == 1 and report["lengths"]["batch_length"] == 64

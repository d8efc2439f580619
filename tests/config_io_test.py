"""config_io: the JSON form and hash of configs stay what the stage markers of
existing workdirs recorded, and from_dict inverts to_dict."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from onesearch_jax import config_io, configs
from onesearch_jax import sharding as sh
from onesearch_jax.eval.config import EvalConfig
from onesearch_jax.khqe.build import BuildConfig, PrecomputedEmbeddings
from onesearch_jax.pars import stage as pars_stage
from onesearch_jax.stages import sids as sids_stage
from onesearch_jax.train import sft_config
from onesearch_jax.world.config import WorldConfig, config_dict

# The phase tasks of the main job when the hashes below were recorded.
PHASE_TASKS = (
  (("s1_title_to_sid", 1.0), ("s1_query_to_sid", 1.0)),
  (("s2_query_to_sidi", 1.0), ("s2_sidq_to_sidi", 1.0), ("s1_title_to_sid", 0.5)),
  (("s3_personal", 1.0), ("s3_window", 1.0), ("s1_title_to_sid", 0.2)),
)

# sha256 of the main job's stage inputs, computed by the code before
# config_io (pipeline._hash_json of dataclasses.asdict / sft_config.config_to_dict /
# pars.stage.config_to_dict). A change here re-runs the stage in every
# existing workdir: change a default deliberately, then update the pin.
PINNED = {
  "world": "0fddbf86e03244159f1de20e0e44a2cac8a6bc6babfe7a1178beadc6e5f3c621",
  # Re-pinned when the KHQE keyword fusion weighed brand and product-type
  # keywords x4 by default (BuildConfig.keyword_tag_weights).
  "sids": "0f20628c12556618ad0f69b0c42b1af44715c2cee6c91c50e5391cbdbbf94ec9",
  # Re-pinned when the main job took 4 decoder layers and length buckets
  # (the old recipe's dict without the new key still hashes to the old
  # code's value: test below), and when SFTConfig.stage_tasks became
  # phase_tasks (SFT phases; the train stage of an old workdir re-runs, as
  # its train/stageK directories are train/phaseK now).
  # Re-pinned when phase 3 served its parameter EMA (SFTConfig.param_ema),
  # and when phase 3's length became one pass over its data (steps[2] = 0,
  # SFTConfig.phase3_passes; the fixed 2,100 steps still hash as before:
  # test below).
  "sft": "75a777c60ea8e12e5ceb883cfac7af8fa72d83552fa9bdb2a67a95a1c993a812",
  # Re-pinned when the reward model took the statistics features and R_score
  # its generator weight, and PARS its validation-day settings (phases off).
  "pars": "5ffbf0196e556f56fbedd1eb8803281970bca4a77d75abd8f47c9bbf1125748a",
  # Re-pinned when the main job switched the beam-recall diagnostic off
  # (EvalConfig.exact_rows 8 -> 0): an existing workdir's eval stage re-runs.
  "eval": "107dfbe8a4067484b3e38d8edca72feadc3faf503c6957a158ca5e484af71d01",
}


def _old_hash(obj) -> str:
  """pipeline._hash_json before config_io."""
  blob = json.dumps(obj, sort_keys=True, default=repr).encode()
  return hashlib.sha256(blob).hexdigest()


def _old_config_dict(cfg):
  """pipeline._config_dict before config_io (no JSON round trip)."""
  return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _main_inputs() -> dict:
  """What the main job's stage markers hash, the new way."""
  return {
    # The marker leaves the world's off switches out (world.config.config_dict).
    "world": {"world": config_io.to_dict(config_dict(configs.world_config()))},
    # The marker leaves the streamed build's fields out while stream is off.
    "sids": sids_stage.marker_config(configs.sids_config()),
    "sft": sft_config.config_to_dict(configs.sft_config(phase_tasks=PHASE_TASKS)),
    "pars": pars_stage.config_to_dict(configs.pars_config()),
    "eval": config_io.to_dict(configs.eval_config()),
  }


def test_main_job_stage_input_hashes_are_pinned():
  got = {k: config_io.json_hash(v) for k, v in _main_inputs().items()}
  assert got == PINNED


def test_fixed_phase3_steps_hash_as_before_the_passes():
  """The main job with a fixed 2,100-step phase 3 (before phase3_passes)
  keeps its old hash: such workdirs stay current."""
  fixed = configs.sft_config(phase_tasks=PHASE_TASKS, steps=(100, 100, 2100))
  assert (
    config_io.json_hash(sft_config.config_to_dict(fixed))
    == "e0aa8130bad2ae4e635dbd311f9a9ed80d68b4edf0cf74c62066b48054e5a1db"
  )


def test_sft_hash_without_the_new_field_is_the_old_codes():
  old_recipe = configs.sft_config(
    steps=(100, 100, 2100),
    phase_tasks=PHASE_TASKS,
    length_buckets=(),
    model=configs.model_config("main", {"num_decoder_layers": 2}),
    param_ema=False,
  )
  sft_dict = sft_config.config_to_dict(old_recipe)
  assert sft_dict.pop("length_buckets") == []
  sft_dict["stage_tasks"] = sft_dict.pop("phase_tasks")  # the field's old name
  assert (
    _old_hash(sft_dict)
    == "3fc3407bf9277b36580e751c614cae40b676424a2fa821647f3c88411840d86a"
  )


def test_unweighted_sids_hash_is_the_old_codes():
  """The paper's unweighted fusion (keyword_tag_weights = ()) hashes as the
  main job's SIDs did before the field existed: such workdirs stay current."""
  cfg = configs.sids_config({"keyword_tag_weights": ()})
  assert (
    config_io.json_hash(sids_stage.marker_config(cfg))
    == "744715abbc95d4a0d366a888d77ec85a096646e96afe60070cc869ad47aea492"
  )


@pytest.mark.parametrize(
  "cfg",
  [
    WorldConfig.tiny(seed=3),
    WorldConfig.default(),
    BuildConfig(),
    BuildConfig(
      quantizer_overrides={"opq_subspaces": 4, "levels": (64, 16, 16)},
      precomputed=PrecomputedEmbeddings("a.npy", "a.txt", "q.npy", "q.txt"),
    ),
    EvalConfig(beam_size=8, ks=(1, 2), k_max=8, baselines=("bm25",)),
    configs.eval_config(),
  ],
  ids=lambda c: type(c).__name__,
)
def test_hash_equals_the_old_asdict_hash(cfg):
  assert config_io.json_hash(config_io.to_dict(cfg)) == _old_hash(_old_config_dict(cfg))
  assert config_io.json_hash({"x": config_io.to_dict(cfg)}) == _old_hash(
    {"x": _old_config_dict(cfg)}
  )


def test_sft_and_pars_dicts_equal_the_old_ones():
  cfg = configs.sft_config(steps=(3, 4, 5), museq={"use_profile": False})
  want = json.loads(json.dumps(dataclasses.asdict(cfg)))
  assert want.pop("task_cache_dir") == ""  # left out while off: the old form
  assert want["museq"].pop("keywords") == "none"  # the same
  assert want["museq"].pop("keywords_in") == "prompt"  # the same
  assert want["museq"].pop("cot_tasks") is False  # the same
  assert want["museq"].pop("direct_cot") is False  # the same
  assert want["museq"].pop("shuffle_rows") is False  # the same
  assert want["museq"].pop("profile_brands") == 0  # the same
  assert want["museq"].pop("item_phrases") == "none"  # the same
  assert want.pop("sdft") is None  # the same
  assert want.pop("phase3_passes") == 1.0  # left out while steps[2] > 0
  assert sft_config.config_to_dict(cfg) == want
  pars = configs.pars_config(seed=4, steps=(2, 3))
  want = json.loads(json.dumps(dataclasses.asdict(pars), default=repr))
  assert want["pars"]["features"].pop("release_stats") is False  # left out while off
  assert want["pars"].pop("grpo") is None  # the same
  assert want["pars"]["r_score"].pop("form") == "linear"  # the same
  assert want["pars"]["data"].pop("phase2_rejected") == "levels"  # the same
  assert want["pars"]["data"].pop("phase1_pool") == "train"  # the same
  for phase in ("phase1", "phase2"):  # the listwise-distillation fields, the same
    assert want["pars"][phase]["loss"].pop("kind") == "dpo"
    assert want["pars"][phase]["loss"].pop("temperature") == 1.0
    assert want["pars"][phase]["loss"].pop("trie_logprobs") is False
  assert pars_stage.config_to_dict(pars) == want
  dist = configs.pars_config(loss_kind="distill", temperature=0.1)
  assert pars_stage.config_to_dict(dist)["pars"]["phase1"]["loss"]["kind"] == "distill"
  on = configs.pars_config(release_stats=True)
  assert pars_stage.config_to_dict(on)["pars"]["features"]["release_stats"] is True
  on = pars_stage.config_to_dict(
    configs.pars_config(r_score_form="log", phase2_rejected="exposed", phase1_pool="unclicked")
  )["pars"]  # fmt: skip
  assert on["r_score"]["form"] == "log"
  assert (on["data"]["phase2_rejected"], on["data"]["phase1_pool"]) == (
    "exposed",
    "unclicked",
  )


def test_to_dict_is_json_with_lists_and_repr():
  d = config_io.to_dict(EvalConfig(ks=(1, 5), k_max=5))
  assert d["ks"] == [1, 5] and json.loads(json.dumps(d)) == d
  assert config_io.to_dict({"a": (1, 2), "b": object}) == {
    "a": [1, 2],
    "b": repr(object),
  }


@pytest.mark.parametrize(
  "cls,cfg",
  [
    (sft_config.SFTConfig, sft_config.SFTConfig()),
    (
      sft_config.SFTConfig,
      configs.sft_config(
        model=configs.model_config("tiny", {"sid_ranges": ((10, 12), (12, 14))}),
        mesh=sh.MeshConfig(
          shape=(1, -1, 1), rules="fsdp", custom_rules=sh.FSDP_TP_RULES
        ),
        steps=(11, 12, 30),
        phase_tasks=((), (("s2_query_to_sidi", 2.0),), ()),
        schedule="per_phase",
        museq={"use_profile": False},
      ),
    ),
    (pars_stage.ParsStageConfig, configs.pars_config(seed=2, steps=(3, 4))),
    (
      pars_stage.ParsStageConfig,
      configs.pars_config(grpo={"variant": "grpo", "num_steps": 7}),
    ),
    (WorldConfig, WorldConfig.tiny(seed=9)),
    (
      BuildConfig,
      BuildConfig(
        variants=("rq_plain",),
        quantizer_overrides={"levels": (4, 4, 4)},
        precomputed=PrecomputedEmbeddings("a.npy", "a.txt", "q.npy", "q.txt"),
      ),
    ),
  ],
  ids=lambda x: x.__name__ if isinstance(x, type) else "",
)
def test_from_dict_inverts_to_dict(cls, cfg):
  raw = json.loads(json.dumps(config_io.to_dict(cfg)))  # as read from disk
  back = config_io.from_dict(cls, raw)
  if cls is BuildConfig:  # a Mapping field keeps its JSON lists
    assert back.quantizer_overrides == {"levels": [4, 4, 4]}
    back = dataclasses.replace(back, quantizer_overrides=cfg.quantizer_overrides)
  assert back == cfg
  assert config_io.to_dict(back) == raw


def test_sft_config_from_an_old_file_keeps_the_old_meaning():
  raw = sft_config.config_to_dict(sft_config.SFTConfig())
  for name in ("phase_tasks", "schedule", "sid_init"):
    del raw[name]  # files written before these fields existed
  old = sft_config.config_from_dict(raw)
  assert old.phase_tasks == ((), (), ()) and old.schedule == "per_phase"
  assert not old.sid_init and old.steps == sft_config.SFTConfig().steps


def test_from_dict_rejects_unknown_fields():
  raw = config_io.to_dict(EvalConfig())
  with pytest.raises(ValueError, match="unknown fields"):
    config_io.from_dict(EvalConfig, {**raw, "beams": 3})
  with pytest.raises(ValueError, match="unknown field"):
    config_io.from_dict(EvalConfig, raw, absent={"beams": 3})

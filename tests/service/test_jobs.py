"""The typed job (lipdub.jobs) at its edges: JSON in Redis, option defaults from the settings, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lipdub.config import Settings, get_settings
from lipdub.jobs import FaceTarget, InputRef, JobError, JobOptions, JobSpec, PrepVerdict
from lipdub.prep.cache import source_key
from lipdub.prep.tracking import Target
from lipdub.service import redis_keys
from lipdub.service.batches import BatchStore
from lipdub.service.manifest import Item, check_options
from lipdub.service.status import JobStore

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> JobStore:  # noqa: F811
    store = JobStore.from_settings(Settings(data_dir=tmp_path, redis_url=redis_url))
    store.r.flushdb()
    return store


SPEC = JobSpec(video=InputRef(asset_id="ast_v", sha256="a" * 64), audio=InputRef(url="https://example.com/a.wav"),
               options=JobOptions.model_validate({"sync_mode": "loop", "frame_rate": "25", "enroll": True,
                                                  "target_face": {"time": 1.5, "box": [10, 20, 110, 140]},
                                                  "ranges": [[0.5, 2], [3, 4.25]]}),
               webhook_url="https://hooks.example.com/h", delivery_url="https://bucket.example.com/o?X-Sig=1",
               metadata={"title": "Ép. 1", "lang": "fr"}, priority="high")


def test_a_job_spec_comes_back_from_redis_unchanged(store: JobStore) -> None:
    job = store.create("acme", SPEC)
    stored = store.get(job.id)
    assert stored is not None and stored.spec == SPEC
    assert stored.spec.options.target == Target(1.5, box=(10.0, 20.0, 110.0, 140.0))
    assert stored.spec.options.dub_ranges == ((0.5, 2.0), (3.0, 4.25)) and stored.spec.queue_priority == 0
    # The probe's download of a URL input replaces that input only.
    downloaded = InputRef(url="https://example.com/a.wav", asset_id="ast_d", sha256="d" * 64)
    store.set_inputs(job.id, audio=downloaded)
    after = store.get(job.id)
    assert after is not None and after.spec == SPEC.model_copy(update={"audio": downloaded})
    assert after.spec.audio.digest == "d" * 64
    with pytest.raises(ValueError, match="not downloaded"):
        _ = SPEC.audio.digest


def test_a_stored_job_keeps_the_defaults_it_was_made_under(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPEC.model_copy(update={"options": JobOptions.under(Settings(sync_mode="silence"))})
    job = store.create("acme", spec)
    monkeypatch.setenv("LIPDUB_SYNC_MODE", "cut_off")  # the service restarts under other settings
    get_settings.cache_clear()
    try:
        stored = store.get(job.id)
        assert stored is not None and stored.spec.options.sync_mode == "silence"
        assert JobOptions().sync_mode == "cut_off"
    finally:
        get_settings.cache_clear()


def test_option_defaults_follow_the_settings_and_a_given_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    other = Settings(sync_mode="cut_off", frame_rate="25")
    assert (JobOptions.under(other).sync_mode, JobOptions.under(other).frame_rate) == ("cut_off", "25")
    given = JobOptions.model_validate({"frame_rate": "source", "sync_mode": None}, context={"settings": other})
    assert (given.sync_mode, given.frame_rate) == ("cut_off", "source")  # None is the default, not a value
    monkeypatch.setenv("LIPDUB_SYNC_MODE", "loop")
    monkeypatch.setenv("LIPDUB_FRAME_RATE", "25")
    get_settings.cache_clear()
    try:
        assert (JobOptions().sync_mode, JobOptions().frame_rate) == ("loop", "25")  # the API's default_factory
        assert JobOptions(sync_mode="bounce").sync_mode == "bounce"
        assert JobOptions.model_validate({}).model_fields_set == set()  # a batch keeps only what was given
    finally:
        get_settings.cache_clear()


def test_unknown_or_invalid_options_are_refused_with_their_field() -> None:
    with pytest.raises(ValidationError, match="speed"):
        JobOptions.model_validate({"speed": 2})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"sync_mode": "stretch"})
    with pytest.raises(ValidationError, match="exactly one of a point or a box"):
        FaceTarget(time=1.0)
    with pytest.raises(ValueError, match=r"options\.speed: Extra inputs are not permitted"):
        check_options({"speed": 2})  # a manifest line's error names the option
    with pytest.raises(ValidationError, match=r"range 2 \(4-6 s\) starts before range 1 ends"):
        JobOptions.model_validate({"ranges": [[0, 5], [4, 6]]})
    with pytest.raises(ValueError, match="range 2"):
        check_options({"ranges": [[0, 1], [3, 2]]})
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**SPEC.model_dump(mode="json"), "priority_name": "low"})  # no second priority


def test_a_batch_item_and_a_prep_verdict_survive_their_json(store: JobStore) -> None:
    item = Item(3, "ep1-fr", SPEC.video, InputRef(asset_id="ast_a", sha256="b" * 64), SPEC.options,
                {"lang": "fr"}, "https://bucket.example.com/o")
    batches = BatchStore(store)
    batch = batches.create("acme", "manifest.jsonl", None, {}, {})
    batches.accept_items(batch.id, "acme", [item], prepared=lambda source: True)
    assert batches.r.hget(redis_keys.batch(batch.id), "status") == "in_progress"
    taken = batches.next_ready("acme")
    assert taken == (batch.id, item)
    assert item.source == source_key("a" * 64, SPEC.options.target)
    verdict = PrepVerdict(verdict="fail", error=JobError(code="no_face", message="no face found"))
    assert PrepVerdict.model_validate(verdict.model_dump(mode="json")) == verdict and not verdict.ok

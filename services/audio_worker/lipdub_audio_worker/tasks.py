"""`dub.audio`: the dub audio → one target mouth opening per 25-fps frame (`jobs/{id}/audio/mouth.npz`)."""

from __future__ import annotations

from celery.signals import worker_process_init

from lipdub.audio.analyze import analyze_audio
from lipdub.audio.models import load_model
from lipdub.config import get_settings
from lipdub.jobs import Stage
from lipdub.service.celery_app import app
from lipdub.service.storage import keys
from lipdub.service.worker import StageTask, stage_run, warm_up


@worker_process_init.connect
def _load_models(**_: object) -> None:
    settings = get_settings()
    warm_up(f"audio model {settings.audio_model}",
            lambda: load_model(settings.audio_model, settings.audio_encoder, settings.audio_threads))


@app.task(name="dub.audio", base=StageTask)
def audio_task(job_id: str) -> None:
    with stage_run(job_id, Stage.audio) as run:
        if run is None:
            return
        spec = run.store.get(job_id).spec  # type: ignore[union-attr]
        audio = run.fetch(keys.asset(spec.audio.digest), "input-audio")
        analyze_audio(audio, run.scratch / "audio", run.settings, run.progress)
        run.storage.put_file(keys.mouth(job_id), run.scratch / "audio" / "mouth.npz")

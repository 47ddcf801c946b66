"""lipdub.service.redis_keys is the only place that spells a Redis key: the layout a deployed Redis holds stays
in one module, and no store reaches into another's keys by spelling them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lipdub.service import redis_keys

ROOT = Path(__file__).resolve().parents[2]
KEYS_MODULE = ROOT / "shared" / "lipdub" / "service" / "redis_keys.py"
PREFIXES = ("job", "jobs", "tenant", "idem", "asset", "assets", "prep", "stats", "upload", "uploads", "lock",
            "rate", "batch", "batches", "bman", "manifests", "wh", "apikey")
# A string that starts like a key ("job:", f"tenant:{t}:jobs"; "prep: ..." with a space is prose), or a
# quoted key prefix inside a Lua script ('batch:' .. id).
KEY_START = re.compile(rf"^(?:{'|'.join(PREFIXES)}):(?!\s)")
LUA_KEY = re.compile(rf"""['"](?:{'|'.join(PREFIXES)}):""")
WHOLE_NAMES = {redis_keys.OUTBOX}


def key_literals(path: Path, root: Path = ROOT) -> list[str]:
    """`path:line: text` of every string constant in `path` that spells a Redis key (docstrings aside)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        text = node.value
        if KEY_START.search(text) or LUA_KEY.search(text) or text in WHOLE_NAMES:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {text[:60]!r}")
    return found


def sources() -> list[Path]:
    return sorted(p for top in ("shared", "services") for p in (ROOT / top).rglob("*.py") if p != KEYS_MODULE)


def test_no_redis_key_is_spelled_outside_the_keys_module() -> None:
    found = [hit for path in sources() for hit in key_literals(path)]
    assert not found, "Redis keys built outside lipdub.service.redis_keys:\n" + "\n".join(found)


def test_the_scan_finds_keys_in_every_form(tmp_path: Path) -> None:
    """The check above can fail: an f-string key, a plain one, a whole name and a prefix in Lua are found;
    prose and the keys module's own names are not."""
    planted = tmp_path / "planted.py"
    planted.write_text('''"""Docstrings may name job:{id}."""
def f(r, job_id, tenant):
    r.hgetall(f"job:{job_id}")
    r.zcard("outbox")
    r.smembers(f"tenant:{tenant}:batch_active")
    script = """redis.call('HGET', 'batch:' .. ARGV[1], 'status')"""
    log = "prep: the video is too short"
    return r.get(redis_keys.job(job_id)), script, log
''')
    hits = sorted(hit.split(": ", 1)[0] for hit in key_literals(planted, tmp_path))
    assert hits == ["planted.py:3", "planted.py:4", "planted.py:5", "planted.py:6"]


def test_the_key_layout_is_the_deployed_one() -> None:
    """A renamed key loses what a running deployment holds: these are the names it has."""
    assert (redis_keys.job("j"), redis_keys.job_chunks("j"), redis_keys.jobs_by_status("queued")) == \
        ("job:j", "job:j:chunks", "jobs:status:queued")
    assert (redis_keys.tenant_jobs("t"), redis_keys.idempotency("t", "k"), redis_keys.batch_request("k")) == \
        ("tenant:t:jobs", "idem:t:k", "batch:k")
    assert (redis_keys.asset("a"), redis_keys.asset_holders("s"), redis_keys.tenant_assets("t"),
            redis_keys.ASSETS_USED, redis_keys.content_lock("s")) == \
        ("asset:a", "asset:holders:s", "tenant:t:assets", "assets:used", "lock:asset:s")
    assert (redis_keys.prep_pointer("s", "7.ab"), redis_keys.prep_keys("s"), redis_keys.stage_stats("prep")) == \
        ("prep:s:v7.ab", "prep:keys:s", "stats:stage:prep")
    assert (redis_keys.OUTBOX, redis_keys.EXPIRING, redis_keys.OPEN_UPLOADS, redis_keys.upload("u")) == \
        ("outbox", "jobs:expiring", "uploads:open", "upload:u")
    assert (redis_keys.FRAMES, redis_keys.JANITOR_STATS, redis_keys.JANITOR_LOCK) == \
        ("stats:frames", "stats:janitor", "janitor")
    assert (redis_keys.rate("d"), redis_keys.tenant_quota("t"), redis_keys.api_key("d"),
            redis_keys.tenant_keys("t"), redis_keys.admission_lock("t")) == \
        ("rate:d", "tenant:t:quota", "apikey:d", "tenant:t:keys", "tenant:t:admission")
    assert redis_keys.batch_keys("b") == ["batch:b", "batch:b:ready", "batch:b:jobs", "batch:b:job_items",
                                          "batch:b:out", "batch:b:err", "batch:b:final", "batch:b:releasing"]
    assert (redis_keys.batch_wait("b", "s"), redis_keys.batch_waits("b"), redis_keys.tenant_batches("t"),
            redis_keys.tenant_ready_batches("t"), redis_keys.tenant_releasing("t"),
            redis_keys.tenant_batch_active("t"), redis_keys.pump_lock("t")) == \
        ("batch:b:wait:s", "batch:b:wait:*", "tenant:t:batches", "tenant:t:batches:ready", "tenant:t:releasing",
         "tenant:t:batch_active", "tenant:t:pump")
    assert (redis_keys.manifest("m"), redis_keys.manifest_batches("m"), redis_keys.BATCHES_EXPIRING,
            redis_keys.MANIFESTS_EXPIRING, redis_keys.BATCHES_DELETING) == \
        ("bman:m", "bman:m:batches", "batches:expiring", "manifests:expiring", "batches:deleting")
    assert (redis_keys.webhook_secrets("t"), redis_keys.webhook_message("m"), redis_keys.webhook_attempts("m"),
            redis_keys.webhook_subject("j"), redis_keys.webhook_claim("m", 1, 2)) == \
        ("wh:secrets:t", "wh:msg:m", "wh:msg:m:attempts", "wh:subject:j", "wh:claim:m:1:2")

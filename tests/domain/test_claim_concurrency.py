"""Two workers claiming at once never get the same job: SQLite and PostgreSQL, threads (two
server processes: tests/e2e/test_claim_processes_e2e.py)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import select

from local_bridge import migrate
from local_bridge.backplane import MemoryBackplane
from local_bridge.db import Database
from local_bridge.domain import Domain
from local_bridge.domain.models import Job
from local_bridge.publisher import Publisher
from pg import FreshDatabase

JOBS = 60
WORKERS = 6


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/claims.db")
        migrate.upgrade(db.engine)
        yield db
        db.close()
        return
    fresh = FreshDatabase()
    db = Database(fresh.url)
    migrate.upgrade(db.engine)
    yield db
    db.close()
    fresh.drop()


def _domain(database: Database) -> tuple[Domain, list]:
    published = []
    backplane = MemoryBackplane()
    backplane.attach(lambda event: published.append(event) or 0)
    return Domain.build(database.sessions, Publisher(backplane), progress_rate=10), published


def test_threads_claiming_at_once_never_share_a_job(database):
    domain, published = _domain(database)
    for i in range(JOBS):
        domain.jobs.create("analysis", priority=i % 5)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(WORKERS)}
    start = threading.Barrier(WORKERS)
    errors = []

    def work(name: str) -> None:
        try:
            start.wait(10)
            while True:
                job = domain.jobs.claim(name)
                if job is None:
                    return
                claimed[name].append(job["id"])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == JOBS and len(set(every)) == JOBS, Counter(every).most_common(3)
    with database.sessions() as db:
        rows = db.execute(select(Job.id, Job.worker, Job.status)).all()
    owner = {str(job_id): worker for job_id, worker, _ in rows}
    assert all(owner[job_id] == name for name, ids in claimed.items() for job_id in ids)
    assert {status for _, _, status in rows} == {"running"}
    started = [e for e in published if e.type == "job_started"]
    assert sorted(e.message["job_id"] for e in started) == sorted(every)
    domain.close()


def test_decisions_racing_on_one_job_let_exactly_one_win(database):
    domain, _ = _domain(database)
    job = domain.jobs.create("analysis")
    domain.jobs.claim("w")
    outcomes = []
    start = threading.Barrier(4)

    def finish(how: str) -> None:
        start.wait(10)
        try:
            if how == "complete":
                domain.jobs.mark_completed(job["id"])
            else:
                domain.jobs.mark_failed(job["id"], "lost")
            outcomes.append(how)
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=finish, args=(how,)) for how in ("complete", "fail") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes).count("Conflict") == 3
    winner = next(o for o in outcomes if o != "Conflict")
    assert domain.jobs.get(job["id"])["status"] == (
        "completed" if winner == "complete" else "failed"
    )
    domain.close()

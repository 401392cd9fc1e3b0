"""Cell claims on a real SQLite MLflow store: one winner per cell, dead holders taken over,
shared tags accumulate under concurrent writers."""

from __future__ import annotations

import threading
import time

from atf import keys
from orchestration.claims import ClaimBook
from orchestration.mlflow_log import TrackingStore, join


def _parent(store: TrackingStore, name: str) -> str:
    return store.client.create_run(store.experiment_id, tags={keys.TAG_KIND: "sweep"}, run_name=name).info.run_id


def test_one_winner_per_cell_under_contention(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = TrackingStore(uri)
    cells = [f"cell{i}" for i in range(6)]
    books = [ClaimBook(TrackingStore(uri), _parent(store, f"s{i}"), f"s{i}", heartbeat_s=60) for i in range(4)]
    won: dict[int, list[str]] = {}
    gate = threading.Barrier(len(books))

    def contend(i: int) -> None:
        gate.wait()
        won[i], _ = books[i].claim(cells)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(books))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owners: dict[str, list[int]] = {}
    for i, cs in won.items():
        for c in cs:
            owners.setdefault(c, []).append(i)
    assert all(len(v) == 1 for v in owners.values()), owners  # never two winners
    for cell, (i,) in owners.items():  # a later claim by another sweep loses to the holder
        j = (i + 1) % len(books)
        assert books[j].claim([cell]) == ([], {cell: books[i].owner})
    books[0].stop()  # withdrawing releases: the cells it held are free again
    free = [c for c, (i,) in owners.items() if i == 0]
    if free:
        assert books[1].claim(free)[0] == free


def test_dead_holder_is_taken_over(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = TrackingStore(uri)
    a = ClaimBook(store, _parent(store, "a"), "a", heartbeat_s=0.1).start()
    b = ClaimBook(TrackingStore(uri), _parent(store, "b"), "b", stale_s=1.0)
    assert a.claim(["x", "y"]) == (["x", "y"], {})
    assert b.claim(["x"]) == ([], {"x": a.owner})
    time.sleep(1.5)
    assert b.claim(["x"]) == ([], {"x": a.owner})  # still beating: alive
    a._stop.set()  # the node dies: no more heartbeats, claims left behind
    assert b.claim(["x"]) == ([], {"x": a.owner})  # first look at the silent heartbeat
    time.sleep(1.3)
    assert b.claim(["x"]) == (["x"], {})  # silent for stale_s: taken over
    store.client.set_terminated(a.owner, "FAILED")  # an ended parent run is dead at once
    c = ClaimBook(TrackingStore(uri), _parent(store, "c"), "c", stale_s=600)
    assert c.claim(["y"]) == (["y"], {})


def test_concurrent_joins_keep_every_sweep_and_table(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = TrackingStore(uri)
    run = store.client.create_run(store.experiment_id, tags={keys.TAG_SWEEP: "a", keys.TAG_TABLES: "III"})
    rid = run.info.run_id
    names = [("b", "IV"), ("c", "VII"), ("d", "X"), ("e", "I")]
    gate = threading.Barrier(len(names))

    def add(sweep: str, table: str) -> None:
        gate.wait()
        join(TrackingStore(uri), rid, sweep, [table])

    threads = [threading.Thread(target=add, args=n) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tags = store.client.get_run(rid).data.tags
    assert tags[keys.TAG_SWEEP] == "a,b,c,d,e"
    assert tags[keys.TAG_TABLES] == "I,III,IV,VII,X"

"""Cell claims: a cell is trained once, whichever of several sweeps on one MLflow store asks.

Why in the MLflow store and not a lock file: the store is the one thing every sweep that can
share a cell shares by definition (finished cells are found there); storage paths differ between
people and may be s3://, where O_EXCL means nothing. MLflow has no compare-and-set, so a claim is
an election that only needs the store to be linearizable (SQLite, or one server over one database):

1. the driver creates a claim run for each cell it wants (experiment `<experiment>-claims`, tags
   atf.claim.cell and atf.claim.owner = the driver's parent run id);
2. it then lists every claim; it owns a cell when no OTHER live owner claims it, else it deletes
   its own claim and waits for the holder.
Two drivers can never both win: if A's listing did not show B's claim, B's claim was created after
A's listing, so B's listing shows A's (A keeps its claim until the cell is done). Both may lose a
simultaneous race; each backs off a random moment and tries again.

Liveness: an owner is its sweep's parent run. Its driver rewrites the run's atf.heartbeat tag every
`heartbeat_s`; an owner whose parent run has ended, vanished, or whose heartbeat has not changed
for `stale_s` (measured on the waiter's own clock: no clock skew) is dead, and its claims are
taken over. A resumed launch keeps its parent run, so it still owns its old claims.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable

from orchestration.mlflow_log import TrackingStore, with_retry

__all__ = ["ClaimBook", "TAG_HEARTBEAT", "TAG_CLAIM_CELL", "TAG_CLAIM_OWNER"]

TAG_HEARTBEAT = "atf.heartbeat"        # on a parent run: changes every heartbeat while its driver lives
TAG_CLAIM_CELL = "atf.claim.cell"      # on a claim run: the cell id claimed
TAG_CLAIM_OWNER = "atf.claim.owner"    # on a claim run: the claiming sweep's parent run id
TAG_CLAIM_SWEEP = "atf.claim.sweep"    # on a claim run: the claiming sweep's name (for people)
_KIND = ("atf.kind", "claim")


class ClaimBook:
    """The claims of one driver (`owner` = its parent run id) in `store`'s claims experiment."""

    def __init__(self, store: TrackingStore, owner: str, sweep_name: str, heartbeat_s: float = 30.0,
                 stale_s: float = 180.0) -> None:
        self.store, self.client = store, store.client
        self.owner, self.sweep_name = owner, sweep_name
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        name = with_retry(lambda: self.client.get_experiment(store.experiment_id)).name + "-claims"
        self.experiment_id = with_retry(lambda: self._experiment(name))
        self.mine: dict[str, str] = {}                    # cell -> my claim run id
        self._seen: dict[str, tuple[str, float]] = {}     # owner -> (heartbeat value, when first seen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - another driver created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # -- heartbeat -------------------------------------------------------------------------------
    def beat(self) -> None:
        self.store.set_tags(self.owner, {TAG_HEARTBEAT: f"{time.time():.3f}"})

    def start(self) -> "ClaimBook":
        """Beat now and every heartbeat_s in a daemon thread (until `stop`)."""
        self.beat()

        def loop() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - a missed beat is retried next time; never kill the driver
                    pass
        self._thread = threading.Thread(target=loop, name="atf-claim-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and withdraw every claim of this driver."""
        self._stop.set()
        self.release(list(self.mine))

    # -- claims ----------------------------------------------------------------------------------
    def _claims(self) -> dict[str, list[Any]]:
        """cell -> every active claim run (any owner), one query."""
        out: dict[str, list[Any]] = {}
        token = None
        while True:
            page = with_retry(lambda: self.client.search_runs(
                [self.experiment_id], f"tags.`{_KIND[0]}` = '{_KIND[1]}'", max_results=1000, page_token=token))
            for r in page:
                out.setdefault(r.data.tags.get(TAG_CLAIM_CELL, ""), []).append(r)
            token = page.token
            if not token:
                return out

    def _alive(self, owner: str) -> bool:
        """Is the driver of parent run `owner` alive (see the module docstring)?"""
        if owner == self.owner:
            return True
        try:
            run = with_retry(lambda: self.client.get_run(owner))
        except Exception:  # noqa: BLE001 - the parent run is gone: so is its driver
            return False
        if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
            return False
        beat = run.data.tags.get(TAG_HEARTBEAT, "")
        now = time.monotonic()
        seen = self._seen.get(owner)
        if seen is None or seen[0] != beat:
            self._seen[owner] = (beat, now)
            return True
        return now - seen[1] < self.stale_s

    def holders(self, cells: Iterable[str]) -> dict[str, str]:
        """cell -> live owner (not this driver) of a claim on it; dead owners' claims are removed."""
        claims = self._claims()
        out: dict[str, str] = {}
        alive: dict[str, bool] = {}
        for cell in cells:
            for r in claims.get(cell, []):
                owner = r.data.tags.get(TAG_CLAIM_OWNER, "")
                if owner == self.owner:
                    continue
                if owner not in alive:
                    alive[owner] = self._alive(owner)
                if alive[owner]:
                    out.setdefault(cell, owner)
                else:  # taken over: the owner died holding it
                    self._delete(r.info.run_id)
        return out

    def claim(self, cells: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """Try to claim `cells`: (won, {lost cell: its live holder})."""
        cells = list(dict.fromkeys(cells))
        existing = self._claims()
        for cell in cells:  # a resumed launch already holds some: do not claim them twice
            mine = [r for r in existing.get(cell, []) if r.data.tags.get(TAG_CLAIM_OWNER) == self.owner]
            if mine:
                self.mine[cell] = mine[0].info.run_id
                continue
            tags = {_KIND[0]: _KIND[1], TAG_CLAIM_CELL: cell, TAG_CLAIM_OWNER: self.owner,
                    TAG_CLAIM_SWEEP: self.sweep_name}
            run = with_retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=f"claim-{cell}"))
            self.mine[cell] = run.info.run_id
        held = self.holders(cells)
        self.release([c for c in cells if c in held])
        return [c for c in cells if c not in held], held

    def release(self, cells: Iterable[str]) -> None:
        for cell in list(cells):
            run_id = self.mine.pop(cell, None)
            if run_id is not None:
                self._delete(run_id)

    def _delete(self, run_id: str) -> None:
        try:
            with_retry(lambda: self.client.delete_run(run_id))
        except Exception:  # noqa: BLE001 - already deleted by a waiter that took it over
            pass

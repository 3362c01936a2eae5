"""Stores served over HTTP from 127.0.0.1, read through fsspec (aiohttp): values, workers, retries, errors."""

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spectravlm.data.dataset import CubeDataset
from spectravlm.data.demo import write_demo_store
from spectravlm.errors import StoreError, StoreReadError
from spectravlm.stack import collate_stacks


class _Handler(SimpleHTTPRequestHandler):
    """Serves files; answers 503 to chunk requests while the server's failure budget lasts."""

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:  # type: ignore[attr-defined]
            srv.requests.append(self.path)  # type: ignore[attr-defined]
            fail = "/c." in self.path and srv.fail_budget > 0  # type: ignore[attr-defined]
            if fail:
                srv.fail_budget -= 1  # type: ignore[attr-defined]
                srv.failed += 1  # type: ignore[attr-defined]
        if fail:
            self.send_error(503, "transient test failure")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default (5) drops concurrent connects: fsspec fetches chunks in parallel


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Server, Path, str]]:
    root = tmp_path_factory.mktemp("www")
    write_demo_store(root / "demo.zarr", size=256, seed=1)
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.fail_budget = 0  # type: ignore[attr-defined]
    server.failed = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/demo.zarr"
    yield server, root / "demo.zarr", url
    server.shutdown()
    server.server_close()


def _same(a, b) -> None:
    for g in a.series:
        assert torch.equal(a[g].values, b[g].values) and torch.equal(a[g].valid, b[g].valid)
        assert torch.equal(a[g].times, b[g].times)
    for t in a.targets:
        assert torch.equal(a.targets[t].nan_to_num(-1), b.targets[t].nan_to_num(-1))


def test_http_store_reads_like_the_local_one(served):
    server, local, url = served
    kw = dict(groups=["s2", "s1"], targets=["agb"], window_size=64, n_times=4, missing_dates="skip")
    remote_ds, local_ds = CubeDataset([url], **kw), CubeDataset([local], **kw)
    assert remote_ds.windows == local_ds.windows and len(remote_ds) == 16
    before = len(server.requests)
    for i in (0, 5, 15):
        _same(remote_ds[i], local_ds[i])
    assert len(server.requests) > before  # the chunks really came over HTTP
    assert any("/s2/data/c." in p for p in server.requests)


def test_http_store_in_forked_workers(served):
    _, local, url = served
    ds = CubeDataset([url], groups=["s2"], targets=["agb"], window_size=128)
    assert ds._pid is not None  # the parent opened handles for its empty-window scan ...
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_stacks)
    batches = list(loader)  # ... and the forked workers open their own
    ref = CubeDataset([local], groups=["s2"], targets=["agb"], window_size=128)
    got = collate_stacks([ref[i] for i in range(len(ref))])
    index = torch.cat([b.index for b in batches])
    assert index.tolist() == list(range(len(ref)))
    values = torch.cat([b["s2"].values for b in batches])
    assert torch.equal(values, got["s2"].values)


def test_transient_errors_are_retried_then_reported(served):
    server, _, url = served
    ds = CubeDataset(
        [url], groups=["s2"], window_size=128, empty_windows="mask", retries=3, retry_backoff_s=0.01
    )
    flaky = CubeDataset(
        [url], groups=["s2"], window_size=128, empty_windows="mask", retries=2, retry_backoff_s=0.01
    )
    ok = ds[1]
    _same(flaky[1], ok)  # opens flaky's handles before the server turns bad
    with server.lock:
        server.fail_budget, server.failed = 2, 0
    again = ds[1]  # two 503s, then success
    assert server.failed == 2
    _same(ok, again)
    with server.lock:
        server.fail_budget, server.failed = 2, 0
    fresh = CubeDataset([url], groups=["s2"], window_size=128, empty_windows="mask", retry_backoff_s=0.01)
    _same(fresh[1], ok)  # opening the store (its time coordinate is a chunk too) is retried as well
    assert server.failed == 2
    with server.lock:
        server.fail_budget, server.failed = 10_000, 0
    with pytest.raises(StoreReadError, match=rf"{url}/s2/(data|cloud)/c\.\d+\..*after 3 attempt\(s\).*503"):
        flaky[0]
    with server.lock:
        server.fail_budget = 0


def test_unreachable_and_missing_urls(served):
    _, _, url = served
    dead = "http://127.0.0.1:9/nothing.zarr"  # port 9 (discard): nothing listens
    with pytest.raises(StoreReadError, match=r"http://127\.0\.0\.1:9/nothing\.zarr: cannot (reach|open)"):
        CubeDataset([dead], groups=["s2"], window_size=64)
    with pytest.raises(StoreError, match=r"not a cube store"):
        CubeDataset([url.replace("demo.zarr", "absent.zarr")], groups=["s2"], window_size=64)


def test_missing_chunk_object_reads_as_fill_value(served, tmp_path):
    _, local, url = served
    ds = CubeDataset([url], groups=["s1"], window_size=256, empty_windows="mask")
    ref = ds[0]["s1"].values.clone()
    assert (ref != -9999).all()
    chunk = local / "s1" / "data" / "c.3.0.0.0"
    saved = chunk.read_bytes()
    chunk.unlink()
    try:
        values = ds[0]["s1"].values
        assert (values[0, 3] == -9999).all()  # the fill value (nodata) where the object is absent
        assert torch.equal(values[0, 2], ref[0, 2])
        assert not np.isin(3, ds[0]["s1"].date_valid[0].nonzero().flatten().tolist())
    finally:
        chunk.write_bytes(saved)

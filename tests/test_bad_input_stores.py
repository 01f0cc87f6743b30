"""Kernel stores never destroy a user's data, never hang, and never return a wrong number silently
(issue #17): paths that hold other data are refused, damaged tiles are caught by their checksums,
resuming needs the same kernel source (not merely the same printed spec), the tile source ships
at every moment, a stalled run ends with an error, and a run killed at a random moment resumes to
the exact matrix.

Real Dask: one LocalCluster of 2 single-threaded workers on random ports for the module.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("dask.distributed")
zarr = pytest.importorskip("zarr")

import cloudpickle  # noqa: E402

import ntkprior as ntp  # noqa: E402
from ntkprior.scale.distributed import (TileSource, kernel_block, kernel_blocks_in_memory, kernel_matrix,  # noqa: E402
                                        local_cluster, source_digest)
from ntkprior.scale.stored import CorruptTileError, StoredKernel, clear_tiles  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this file

BLOCK = 64
SPEC = "[dense(64, weight_std=1.5, bias_std=0.05) relu]*2 dense(1)"


@pytest.fixture(scope="module")
def client():
    import dask
    from dask.distributed import Client
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):   # a task that kills 2 workers is bad
        with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def arch():
    return ntp.parse_spec(SPEC)


@pytest.fixture(scope="module")
def x():
    return torch.randn(150, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(arch, x):
    return kernel_blocks_in_memory(arch, x, block=BLOCK)


def tree(path):
    return sorted((p.relative_to(path), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


# --- paths -------------------------------------------------------------------------------------

def test_a_directory_of_other_files_is_never_replaced(client, arch, x, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work")
    (victim / "sub" / "data.csv").write_text("1,2,3")
    before = tree(victim)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds other data, not an ntkprior kernel store; pass a new path"):
            kernel_matrix(arch, x, store=victim, block=BLOCK, client=client, overwrite=overwrite)
    assert tree(victim) == before


def test_a_file_and_the_working_directory_are_refused(client, arch, x, tmp_path, monkeypatch):
    (tmp_path / "f.zarr").write_text("not a store")
    with pytest.raises(ValueError, match="is a file, not an ntkprior kernel store"):
        kernel_matrix(arch, x, store=tmp_path / "f.zarr", block=BLOCK, client=client)
    store = tmp_path / "K.zarr"
    kernel_matrix(arch, x[:20], store=store, block=BLOCK, client=client)
    monkeypatch.chdir(store)              # a store that is the working directory is never replaced
    with pytest.raises(ValueError, match="working directory"):
        kernel_matrix(arch, x, store=".", block=BLOCK, client=client, overwrite=True)
    assert StoredKernel(store).shape == (20, 20)


def test_an_empty_directory_becomes_a_store_and_overwrite_replaces_only_a_store(client, arch, x, reference,
                                                                                tmp_path):
    store = tmp_path / "empty"
    store.mkdir()
    assert torch.equal(kernel_matrix(arch, x, store=store, block=BLOCK, client=client).load(), reference)
    with pytest.raises(ValueError, match=r"different arguments.*--overwrite"):
        kernel_matrix(arch, x[:30], store=store, block=BLOCK, client=client)
    replaced = kernel_matrix(arch, x[:30], store=store, block=BLOCK, client=client, overwrite=True)
    assert replaced.shape == (30, 30)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ntkprior-tmp")]


# --- damaged tiles -----------------------------------------------------------------------------

def _damage(path, how):
    """Damage tile (0, 1)'s chunk file of the store at ``path`` the way ``how`` says."""
    chunk = path / "kernel" / "c" / "0" / "1"
    data = bytearray(chunk.read_bytes())
    if how == "nan":
        data[8 * 5:8 * 6] = np.array([np.nan]).tobytes()
    elif how == "random bytes":
        data[100:164] = np.random.default_rng(0).bytes(64)
    elif how == "flipped exponent bit":
        data[8 * 7 + 6] ^= 0x10          # bit 52 + 4 of the 8th float: its exponent
    elif how == "truncated":
        data = data[:len(data) // 2]
    if how == "deleted":
        chunk.unlink()
    else:
        chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["nan", "random bytes", "flipped exponent bit", "truncated", "deleted"])
def test_a_damaged_tile_is_caught_named_and_recomputed(client, arch, x, reference, tmp_path, how):
    store = tmp_path / "K.zarr"
    kernel_matrix(arch, x, store=store, block=BLOCK, client=client)
    _damage(store, how)
    stored = StoredKernel(store, max_memory=1)          # streamed: every product reads the tiles
    for use in (stored.load, lambda: stored.matvec(torch.ones(150)), lambda: stored.eigsh(2),
                lambda: ntp.KernelPrior(stored).log_prob(torch.ones(150))):
        with pytest.raises(CorruptTileError, match=r"tile \(0, 1\) \(rows 0-63, columns 64-127\).*clear_tiles"):
            use()
    clear_tiles(store, [(0, 1)])
    assert torch.equal(kernel_matrix(arch, x, store=store, block=BLOCK, client=client).load(), reference)


def test_values_written_behind_the_store_s_back_are_caught(client, arch, x, tmp_path):
    store = tmp_path / "K.zarr"
    kernel_matrix(arch, x, x[:70], store=store, block=BLOCK, client=client)
    zarr.open_group(str(store), mode="r+")["kernel"][149, 69] = 1.0     # the last, ragged tile
    with pytest.raises(CorruptTileError, match=r"tile \(2, 1\)"):
        StoredKernel(store).load()


def test_inputs_changed_on_disk_are_caught(client, arch, x, tmp_path):
    store = tmp_path / "K.zarr"
    kernel_matrix(arch, x, x[:70], store=store, block=BLOCK, client=client)
    assert torch.equal(StoredKernel(store).x2, x[:70])
    zarr.open_group(str(store), mode="r+")["x2"][3, 1] = 0.5
    with pytest.raises(CorruptTileError, match="inputs x1/x2 do not match the digest"):
        StoredKernel(store).x2


# --- identifying the kernel source ---------------------------------------------------------------

def test_same_spec_different_function_is_not_resumed(client, x, tmp_path):
    def layers(fn, scale):
        return ntp.serial(ntp.Dense(32), ntp.Elementwise(lambda t: fn(scale * t), name="f"), ntp.Dense(1))

    tanh, sin, tanh2 = layers(torch.tanh, 1.0), layers(torch.sin, 1.0), layers(torch.tanh, 2.0)
    assert str(tanh) == str(sin) == str(tanh2)                 # the printed spec cannot tell them apart
    digests = {source_digest(a) for a in (tanh, sin, tanh2)}
    assert len(digests) == 3 and source_digest(layers(torch.tanh, 1.0)) == source_digest(tanh)
    store = tmp_path / "K.zarr"
    kernel_matrix(tanh, x[:20], store=store, block=BLOCK, client=client)
    for other in (sin, tanh2):
        with pytest.raises(ValueError, match="different arguments.*architecture"):
            kernel_matrix(other, x[:20], store=store, block=BLOCK, client=client)


class _Opaque:
    """An architecture look-alike holding something ntkprior cannot fingerprint."""

    def __init__(self, arch):
        self.arch, self.handle = arch, memoryview(b"state")

    def __str__(self):
        return str(self.arch)

    def kernel(self, *args, **kwargs):
        return self.arch.kernel(*args, **kwargs)

    def __reduce__(self):
        return (_Opaque, (self.arch,))


def test_an_unidentifiable_source_is_computed_but_never_resumed(client, arch, x, tmp_path):
    opaque = _Opaque(arch)
    assert source_digest(opaque) is None
    store = tmp_path / "K.zarr"
    kernel_matrix(opaque, x[:20], store=store, block=BLOCK, client=client)
    with pytest.raises(ValueError, match="cannot all be identified"):
        kernel_matrix(opaque, x[:20], store=store, block=BLOCK, client=client)


# --- the tile source ships at every moment ---------------------------------------------------------

def test_tile_source_pickles_after_use_and_in_the_middle_of_a_tile(arch, x):
    """Mid-tile, torch.func has swapped the model's parameters for TensorWrappers, which cannot be
    pickled: a transfer of the live model to another worker failed then, and its task waited forever."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    for obj in (arch, model):
        source = TileSource(obj, "ntk", shipped=True)
        first = kernel_block(source, x[:10], None)
        assert np.array_equal(kernel_block(cloudpickle.loads(cloudpickle.dumps(source)), x[:10], None), first)
    outcomes = []

    def pickle_both(module, args, out):         # runs inside the forward of a torch.func transform
        for what in (model, source):
            try:
                cloudpickle.dumps(what)
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(type(exc).__name__)

    handle = model.register_forward_hook(pickle_both)
    params = {k: v.detach() for k, v in model.named_parameters()}
    torch.func.grad(lambda p: torch.func.functional_call(model, p, (x[:3],)).sum())(params)
    handle.remove()
    assert outcomes == ["NotImplementedError", "ok"]      # the live model cannot travel now; its source can
    shipped = cloudpickle.loads(cloudpickle.dumps(source))
    assert shipped.digest == source.digest and np.array_equal(kernel_block(shipped, x[:10], None), first)


# --- stalls --------------------------------------------------------------------------------------

class _Stalling:
    """The architecture, but each tile on a worker sleeps ``seconds`` first while ``armed`` exists."""

    def __init__(self, arch, seconds, armed):
        self.arch, self.seconds, self.armed = arch, seconds, armed

    def __str__(self):
        return str(self.arch)

    def kernel(self, x1, x2=None, **options):
        if len(x1) > 2 and os.path.exists(self.armed):
            time.sleep(self.seconds)
        return self.arch.kernel(x1, x2, **options)


def test_a_stalled_run_ends_with_an_error_and_resumes(client, arch, x, reference, tmp_path):
    armed = tmp_path / "armed"
    armed.touch()
    stalling = _Stalling(arch, 4.0, str(armed))
    store = tmp_path / "K.zarr"
    with pytest.raises(RuntimeError, match=r"no block finished for 1 s.*call kernel_matrix again"):
        kernel_matrix(stalling, x, store=store, block=BLOCK, client=client, stall_timeout=1)
    armed.unlink()
    client.run(time.sleep, 0)                 # (the cancelled sleeps finish on their own)
    assert torch.equal(kernel_matrix(stalling, x, store=store, block=BLOCK, client=client).load(), reference)
    with pytest.raises(ValueError, match="stall_timeout"):
        kernel_matrix(arch, x, store=store, block=BLOCK, client=client, stall_timeout=0)


class _Crashing:
    """The architecture, but the worker computing tile (0, 1) dies (os._exit) while ``armed`` exists."""

    def __init__(self, arch, x, armed):
        self.arch, self.key, self.armed = arch, (float(x[0, 0]), float(x[BLOCK, 0])), armed

    def __str__(self):
        return str(self.arch)

    def kernel(self, x1, x2=None, **options):
        if x2 is not None and (float(x1[0, 0]), float(x2[0, 0])) == self.key and os.path.exists(self.armed):
            os._exit(1)
        return self.arch.kernel(x1, x2, **options)


def test_a_task_that_keeps_killing_workers_ends_with_an_error_and_resumes(client, arch, x, reference, tmp_path):
    armed = tmp_path / "armed"
    armed.touch()
    crashing = _Crashing(arch, x, str(armed))
    store = tmp_path / "K.zarr"
    # Dask gives up on the task (KilledWorker), or cancels it when both workers died holding its inputs
    with pytest.raises(RuntimeError, match=r"(block \(\d, \d\) failed: KilledWorker|cancelled block tasks \(.*lost "
                                           r"dependencies).*of 6 blocks are stored.*again"):
        kernel_matrix(crashing, x, store=store, block=BLOCK, client=client, stall_timeout=120)
    armed.unlink()
    client.wait_for_workers(2, timeout=60)
    assert torch.equal(kernel_matrix(crashing, x, store=store, block=BLOCK, client=client).load(), reference)


def test_an_unreachable_scheduler_is_a_value_error(arch, x, tmp_path):
    with pytest.raises(ValueError, match=r"no Dask scheduler answered at 'tcp://127.0.0.1:9'"):
        kernel_matrix(arch, x, store=tmp_path / "K.zarr", block=BLOCK, client="tcp://127.0.0.1:9")


# --- kill -9 at a random moment, then rerun --------------------------------------------------------

KILLS = 4


def test_kill_9_at_a_random_moment_then_rerun_gives_the_exact_matrix(client, tmp_path):
    """``ntkprior kernel --store`` killed with SIGKILL at random moments (seeded), then run again."""
    x = torch.randn(600, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "x.npy", x.numpy())
    reference = kernel_blocks_in_memory(ntp.parse_spec(SPEC), x, block=BLOCK)
    command = [sys.executable, "-c", "from ntkprior.app.cli import app; app()", "kernel", "--arch", SPEC,
               "--x1", str(tmp_path / "x.npy"), "--store", str(tmp_path / "K.zarr"), "--block", str(BLOCK),
               "--scheduler", client.scheduler.address]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(17)
    killed = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    assert killed >= 1                           # at least one run really died mid-way
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert torch.equal(StoredKernel(tmp_path / "K.zarr").load(), reference)

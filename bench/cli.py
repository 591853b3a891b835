"""`qmtgan bench` (the benchmark harness), `qmtgan bench train-step`, `qmtgan demo`."""

from __future__ import annotations

from pathlib import Path

import click

from qmtgan.bench.demo import demo


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _bundle_dirs(folders: tuple[Path, ...], only: list[str]) -> list[Path]:
    found = []
    for folder in folders:
        if (folder / "manifest.json").is_file():  # a bundle named directly is always kept
            found.append(folder)
            continue
        found += [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "manifest.json").is_file()
                  and (not only or p.name in only)]
    return found


@click.group(invoke_without_command=True)
@click.option("--bundles", "bundle_folders", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A bundle folder, or a folder of bundles (repeatable).")
@click.option("--only", help="Comma-separated bundle names to keep from folders of bundles (e.g. onnx,tflite-int8).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The trained run: the Keras float baseline of every benchmark.")
@click.option("--pair", "pair_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The scene pair whose real tiles are run (and whose target scores the SNR).")
@click.option("--targets", "target_names", default="host-x86_64", show_default=True,
              help="Comma-separated boards of `qmtgan targets list`.")
@click.option("--host", "hosts", multiple=True, help="BOARD=user@addr: reach that board over ssh (repeatable).")
@click.option("--port", type=int, help="ssh port.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="ssh private key.")
@click.option("-o", "--ssh-option", "ssh_options", multiple=True, help="Extra `ssh -o` options.")
@click.option("--python", help="The boards' python (default: each board's reach.python).")
@click.option("--workdir", help="Folder on ssh boards (default: each board's reach.workdir).")
@click.option("--threads", "threads_text", help="Comma-separated thread counts (default: each board's default).")
@click.option("--rpc", "rpc_server", help="host:port of a TVM RPC server (python -m tvm.exec.rpc_server).")
@click.option("--rpc-tracker", help="host:port of a TVM RPC tracker.")
@click.option("--rpc-key", help="Device key to request from the tracker.")
@click.option("--rpc-target", default="host-x86_64", show_default=True, help="The board behind the RPC server.")
@click.option("--tiles", "tile_count", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds.")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True,
              help="Seconds one configuration may take.")
@click.option("--native", is_flag=True, help="Also run every TVM module with the C++ runner qmtg-run (built with CMake).")
@click.option("--keep-outputs", is_flag=True, help="Save every configuration's predicted tiles (.npy).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/bench"), show_default=True)
@click.pass_context
def bench(ctx, bundle_folders, only, model_dir, pair_dir, target_names, hosts, port, identity, ssh_options, python,
          workdir, threads_text, rpc_server, rpc_tracker, rpc_key, rpc_target, tile_count, warmup, runs, min_time, timeout,
          native, keep_outputs, out) -> None:
    """Latency, memory and SNR of bundles x targets x threads (and TVM RPC), each configuration
    in a fresh process, against the Keras float baseline measured in the same run."""
    if ctx.invoked_subcommand is not None:
        return
    from qmtgan.bench.harness import Plan, run_bench
    from qmtgan.bench.records import Timing
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.registry import board

    if not (bundle_folders and model_dir and pair_dir):
        raise QmtganError("qmtgan bench needs --bundles, --model and --pair (see --help)")
    targets = _csv(target_names)
    for name in targets:
        board(name)  # unknown target: one clear error before anything runs
    host_map = {}
    for item in hosts:
        name, sep, addr = item.partition("=")
        if not sep:
            raise QmtganError(f"--host takes BOARD=user@addr, got '{item}'")
        host_map[board(name).name] = addr
    bundles = _bundle_dirs(bundle_folders, _csv(only))
    if not bundles:
        raise QmtganError(f"no bundle (a folder with manifest.json) in {', '.join(map(str, bundle_folders))}")
    threads = [int(t) for t in _csv(threads_text)] or [None]
    rpc = {}
    if rpc_server or rpc_tracker:
        rpc = {"server": rpc_server, "tracker": rpc_tracker, "key": rpc_key, "target": board(rpc_target).name}
    plan = Plan(bundles, targets, threads, host_map,
                {"port": port, "identity": identity, "options": ssh_options, "python": python, "workdir": workdir}, rpc, threads, native)
    records = run_bench(plan, model_dir, pair_dir, tile_count, Timing(warmup, runs, min_time, timeout), out,
                        keep_outputs, log=click.echo)
    click.echo((out / "bench.md").read_text())
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise QmtganError(f"{len(failed)} of {len(records)} configurations failed (see {out / 'bench.md'})")


@bench.command("train-step", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train_step(args: tuple[str, ...]) -> None:
    """Time a 512x512 GAN step and generator forward pass (see --help of the script)."""
    from qmtgan.bench.train_step import main

    main(list(args))


COMMANDS = [demo, bench]

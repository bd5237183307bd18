"""Fan a kktcert job out as shards on a Dask cluster, then merge.

    python -m kktcert.cluster --shards 8 --local-workers 2 --out report_dir -- reproduce --quick
    python -m kktcert.cluster --shards 64 --scheduler tcp://head:8786 --out dist.json -- \\
        distance --net net.safetensors --data test.safetensors

Each task runs ``kktcert <args> --shard i/N`` writing its output into
``<out>.shards/`` (a shared filesystem when the workers are on other
machines), then ``kktcert merge`` combines them into exactly what the
unsharded run writes. Why Dask: a pure-Python, pip-installable engine whose
``LocalCluster`` runs on one machine and whose ``dask-jobqueue`` submits the
same workers through Slurm/PBS; retries are Dask's (``retries=``), and a
retried shard cannot leave half a file behind because kktcert writes every
output atomically (temporary file + rename).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

# What a shard writes: a directory for `reproduce`, a JSON file otherwise.
DIRECTORY_OUTPUT = {"reproduce"}
SHARDABLE = {"distance", "certify", "attack", "reproduce"}


def shard_command(kktcert, args, index, count, shard_dir):
    """The command line of shard `index` of `count`, and the output it writes."""
    out = Path(shard_dir) / (f"shard-{index:05d}" if args[0] in DIRECTORY_OUTPUT else f"shard-{index:05d}.json")
    flag = "--out" if args[0] in DIRECTORY_OUTPUT else "--json"
    return [kktcert, "--quiet", *args, "--shard", f"{index}/{count}", flag, str(out)], out


def run_shard(cmd):
    """One Dask task: runs a shard to completion; a failure raises (and Dask retries)."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def run(args, shards, out, kktcert="kktcert", scheduler=None, local_workers=2, retries=2):
    """Runs `kktcert <args>` as `shards` Dask tasks and merges into `out`."""
    from dask.distributed import Client, LocalCluster

    if not args or args[0] not in SHARDABLE:
        raise ValueError(f"the job must be one of {sorted(SHARDABLE)}, got {args[:1]}")
    out = Path(out)
    shard_dir = Path(str(out) + ".shards")
    shard_dir.mkdir(parents=True, exist_ok=True)
    cmds = [shard_command(kktcert, args, i, shards, shard_dir) for i in range(shards)]
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(run_shard, cmd, key=f"kktcert-shard-{i}", retries=retries, pure=False) for i, (cmd, _) in enumerate(cmds)]
        client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    merge = [kktcert, "--quiet", "merge", *(str(p) for _, p in cmds), "--out", str(out)]
    proc = subprocess.run(merge, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"merge failed: {proc.stderr.strip()}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m kktcert.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, required=True, help="number of shards (tasks)")
    p.add_argument("--out", required=True, help="merged output: a JSON file, or a directory for reproduce")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    p.add_argument("--local-workers", type=int, default=os.cpu_count() or 1, help="workers of the LocalCluster")
    p.add_argument("--retries", type=int, default=2, help="Dask retries per failed shard")
    p.add_argument("--kktcert", default="kktcert", help="path of the kktcert binary on the workers")
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- SUBCOMMAND ARGS… (without --shard/--json/--out)")
    a = p.parse_args(argv)
    job = a.job[1:] if a.job[:1] == ["--"] else a.job
    try:
        out = run(job, a.shards, a.out, a.kktcert, a.scheduler, a.local_workers, a.retries)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {a.shards} shards → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

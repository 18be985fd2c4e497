"""scripts/fuzz: run each fuzz target (tests/fuzz/harnesses) for a given time.

    scripts/fuzz [TARGET|all] [SECONDS] [--random] [--asan] [--dir DIR] [--results FILE]

Each target runs in its own process: under atheris (libFuzzer, coverage-guided, Python code of
sfu/, signaling/, jwt and aiortc instrumented, not the harnesses) when it is installed, else (or
with --random) on random mutations of the corpus. The corpus (the harness's seeds, then what
libFuzzer keeps) and crash inputs live under DIR/<target>/ (default: $TMPDIR/aiosfu-fuzz). A
crash or a hang (an input running over 10 s) stops its target; the input is written under
crashes/ and the line printed says how to replay it (``--replay TARGET FILE``).

Each run appends a JSON line (target, mode, inputs, seconds, crash, commit, corpus, time) to
DIR/<target>/runs.jsonl, so runs that build on one corpus add up, and to FILE if given (e.g.
benchmarks/results/fuzz.jsonl, for a note to cite).

atheris instruments Python only: the C extensions (sfu/media/_packetio.c, _transport_cc.c) are
run, not steered by their coverage. ``--asan`` builds them with gcc's AddressSanitizer and
UndefinedBehaviorSanitizer in a copy of the tree (DIR/asan-tree) and runs the targets there in
random mode, so a memory error in C stops the run instead of passing unseen.

Exit status 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tests.fuzz.harnesses import TARGETS, harness

INPUT_TIMEOUT = 10  # seconds: an input running longer is a hang
MAX_LEN = 4096  # bytes: what one datagram, frame or SDP of interest holds
# what the parsers are; not the harnesses (tests.fuzz): their loops that build inputs and check
# results would be traced too, at several times the cost, for no coverage of the code under test
_INSTRUMENTED = ["sfu", "signaling", "jwt", "aiortc"]
#: modules (exact names) a target only builds its inputs with: the bwe harness encodes its
#: feedback with sfu.rtp.twcc (the twcc target fuzzes that), tracing it was a fifth of the time
_NOT_INSTRUMENTED = {"bwe": ["sfu.rtp.twcc"]}
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")
_RESULT = "FUZZ-RESULT"


def _corpus(directory: Path, name: str) -> tuple[Path, Path]:
    corpus, crashes = directory / name / "corpus", directory / name / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    for seed in harness(name).seeds():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return corpus, crashes


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del out[at : at + rng.randint(1, 16)]
        elif op == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            out[at:] = other[start : start + rng.randint(0, 64)] + out[at:]
        elif op == 5:
            out = out[:at]
        else:
            out[at:at] = out[at : at + rng.randint(1, 32)] * rng.randint(1, 4)
    return bytes(out[:MAX_LEN])


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError(f"one input ran over {INPUT_TIMEOUT} s")


def _random_mode(run: Callable[[bytes], None], corpus: Path, crashes: Path, seconds: float) -> int:
    """Mutate the corpus at random until time is up; the number of inputs run."""
    rng = random.Random()
    pool = [p.read_bytes() for p in sorted(corpus.iterdir())] or [b""]
    signal.signal(signal.SIGALRM, _on_alarm)
    deadline = time.monotonic() + seconds
    count = 0
    # what a crash of the process itself (a sanitizer's abort) leaves to replay
    last = os.open(crashes / "last-input", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    while time.monotonic() < deadline:
        for _ in range(100):
            pick = rng.random()
            if pick < 0.05:
                data = rng.randbytes(rng.randrange(256))
            else:
                data = _mutate(rng, rng.choice(pool), pool)
            os.ftruncate(last, 0)
            os.pwrite(last, data, 0)
            signal.alarm(INPUT_TIMEOUT)
            try:
                run(data)
            except BaseException:
                signal.alarm(0)
                path = crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
                path.write_bytes(data)
                traceback.print_exc()
                print(f"{_RESULT} inputs={count + 1} crash={path}", flush=True)
                return count + 1
            signal.alarm(0)
            count += 1
            if count % 1000 == 0 and rng.random() < 0.1 and len(pool) < 10_000:
                pool.append(data)  # let some mutants breed
    return count


def _child(name: str, seconds: float, directory: Path, use_random: bool) -> None:
    if not use_random:
        try:
            import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            print("atheris is not installed: random mode", file=sys.stderr)
            use_random = True
    if use_random:
        corpus, crashes = _corpus(directory, name)
        count = _random_mode(harness(name).run, corpus, crashes, seconds)
        print(f"{_RESULT} inputs={count}", flush=True)
        return
    # instrumented as they are first imported: before anything else imports them
    with atheris.instrument_imports(include=_INSTRUMENTED, exclude=_NOT_INSTRUMENTED.get(name)):
        run = harness(name).run
    corpus, crashes = _corpus(directory, name)
    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={max(1, round(seconds))}",
            f"-timeout={INPUT_TIMEOUT}",
            f"-max_len={MAX_LEN}",
            "-rss_limit_mb=3072",
            "-print_final_stats=1",
            f"-artifact_prefix={crashes}/",
        ],
        run,
    )
    atheris.Fuzz()


def _asan_tree(directory: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the tree with its C extensions built under ASan and UBSan, and the environment
    that preloads their runtimes (the interpreter itself is not built with them)."""
    root = Path(__file__).parents[2]
    tree = directory / "asan-tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    for name in ("sfu", "signaling", "tests"):
        shutil.copytree(root / name, tree / name, ignore=shutil.ignore_patterns("*.so"))
    shutil.copy(root / "setup.py", tree)
    flags = "-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
    build = {**os.environ, "CC": "gcc", "CFLAGS": flags, "LDFLAGS": flags}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tree,
        env=build,
        check=True,
        capture_output=True,
    )
    runtimes = [
        subprocess.run(
            ["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for lib in ("libasan.so", "libubsan.so")
    ]
    env = {
        **os.environ,
        "LD_PRELOAD": ":".join(runtimes),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    return tree, env


def _run_target(
    name: str,
    seconds: float,
    directory: Path,
    use_random: bool,
    asan: tuple[Path, dict[str, str]] | None = None,
) -> tuple[int, str | None, str]:
    """(inputs run, crash input path or None, mode) of one target in a child process."""
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", name, str(seconds)]
    command += ["--dir", str(directory)] + (["--random"] if use_random or asan else [])
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        cwd=asan[0] if asan else None,
        env=asan[1] if asan else None,
    )
    output = result.stdout + result.stderr
    if f"{_RESULT} " in output or use_random or asan:  # random mode
        mode = "asan" if asan else "random"
        line = output[output.rindex(_RESULT) :].split("\n", 1)[0] if _RESULT in output else ""
        count = int(line.split("inputs=")[1].split()[0]) if line else 0
        crash = line.split("crash=")[1] if "crash=" in line else None
    else:
        mode = "atheris"
        counts = _EXECUTED.findall(output)
        count = int(counts[-1]) if counts else 0
        found = re.search(r"(?:Test unit|Crash unit|Timeout unit) written to (\S+)", output)
        found = found or re.search(r"written to (\S+)", output)
        crash = found.group(1) if found else None
    if result.returncode != 0 and crash is None:
        last = directory / name / "crashes" / "last-input"
        if mode != "atheris" and last.exists():
            data = last.read_bytes()
            kept = last.with_name(f"crash-{hashlib.sha1(data).hexdigest()}")
            kept.write_bytes(data)
            crash = str(kept)
        else:
            crash = f"(exit status {result.returncode}, no input written)"
    if crash is not None:
        sys.stderr.write(output[-6000:])
    return count, crash, mode


def _commit() -> str:
    """The tree's commit, "+dirty" when it has uncommitted changes."""
    root = Path(__file__).parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def _record(paths: list[Path], **fields: object) -> None:
    line = json.dumps(fields) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default="all", choices=["all", *TARGETS])
    parser.add_argument("seconds", nargs="?", type=float, default=60.0, help="per target")
    parser.add_argument("--random", action="store_true", help="random mode, even with atheris")
    parser.add_argument("--asan", action="store_true", help="C extensions under ASan/UBSan")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "aiosfu-fuzz")
    parser.add_argument("--results", type=Path, help="also append each run's record to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.target, args.seconds, args.dir, args.random)
        return 0
    names = list(TARGETS) if args.target == "all" else [args.target]
    asan = _asan_tree(args.dir) if args.asan else None
    failed = False
    print(f"{'target':<10} {'mode':<8} {'inputs':>10} {'inputs/s':>9}  result", flush=True)
    for name in names:
        started = time.monotonic()
        count, crash, mode = _run_target(name, args.seconds, args.dir, args.random, asan)
        elapsed = time.monotonic() - started
        rate = count / max(elapsed, 1e-9)
        _record(
            [args.dir / name / "runs.jsonl"] + ([args.results] if args.results else []),
            target=name,
            mode=mode,
            inputs=count,
            seconds=round(elapsed, 1),
            crash=crash,
            commit=_commit(),
            corpus=str(args.dir / name / "corpus"),
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        result = "ok" if crash is None else f"CRASH {crash}"
        if crash is not None:
            failed = True
            result += f"  (replay: scripts/fuzz --replay {name} {crash})"
        print(f"{name:<10} {mode:<8} {count:>10} {rate:>9.0f}  {result}", flush=True)
    return 1 if failed else 0


def replay(name: str, path: str) -> None:
    """Run one saved input through its target, with the traceback."""
    harness(name).run(Path(path).read_bytes())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        replay(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())

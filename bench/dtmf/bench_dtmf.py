"""DTMF benchmark: switch's batched numpy detector against spandsp 0.0.6, in one run.

Accuracy: every category of issue 4 (tests/dtmf/siggen.py, several seeds),
plus talk-off on espeak-ng speech and on music-like signals, run through
switch and through spandsp's dtmf_rx (a C harness built here with gcc
against libspandsp-dev, fed the same µ-law audio through files).

Throughput: channels processed in real time on one core, at 1, 100, 1 000
and 10 000 channels, for switch (one ``process`` call per 40 ms tick for all
channels) and spandsp (one dtmf_rx state per channel, 40 ms chunks).  The
audio is a mix of speech and DTMF; both detectors get 16-bit linear samples
(µ-law decoding is the media layer's and is not timed for either).

Run (one core, single-threaded BLAS):

    OPENBLAS_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/dtmf/bench_dtmf.py

``--quick`` shortens everything (smoke test); ``--speech-minutes`` sets the
talk-off material (default 32); ``--repeat`` the throughput runs per count
(default 3: the median is reported, and each run's ratio, because the
machine is shared and single runs of 0.1 s of CPU are noisy); ``--only
accuracy`` or ``--only throughput`` runs one part; ``--counts 100,1000``
chooses the throughput channel counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "dtmf"))

import siggen  # noqa: E402

from switch.dtmf.inband import InbandDetector  # noqa: E402

HARNESS_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <spandsp.h>

static long pos;
static int current_case;
static void on_tone(void *user, int code, int level, int delay) {
    (void) user; (void) level; (void) delay;
    if (code) printf("%d %c %ld\n", current_case, code, pos);
}

/* acc FILE...: each file is raw u-law; prints "case digit sample" per detected start */
static int accuracy(int n, char **files) {
    static uint8_t u[1 << 24];
    static int16_t lin[1 << 24];
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) { perror(files[i]); return 1; }
        size_t len = fread(u, 1, sizeof(u), f);
        fclose(f);
        for (size_t k = 0; k < len; k++) lin[k] = ulaw_to_linear(u[k]);
        dtmf_rx_state_t *s = dtmf_rx_init(NULL, NULL, NULL);
        dtmf_rx_set_realtime_callback(s, on_tone, NULL);
        current_case = i;
        for (pos = 0; pos < (long) len; pos += 40) {
            int chunk = (long) len - pos < 40 ? (int) ((long) len - pos) : 40;
            dtmf_rx(s, lin + pos, chunk);
        }
        dtmf_rx_free(s);
    }
    return 0;
}

/* bench CHANNELS SECONDS FILE: FILE is raw int16 pool; prints seconds of CPU */
static int bench(int channels, double seconds, const char *file) {
    FILE *f = fopen(file, "rb");
    if (!f) { perror(file); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f) / 2;
    fseek(f, 0, SEEK_SET);
    int16_t *pool = malloc(n * 2);
    if (fread(pool, 2, n, f) != (size_t) n) return 1;
    fclose(f);
    long total = (long) (seconds * 8000);
    dtmf_rx_state_t **s = malloc(sizeof(*s) * channels);
    long *off = malloc(sizeof(long) * channels);
    srand(1);
    for (int c = 0; c < channels; c++) {
        s[c] = dtmf_rx_init(NULL, NULL, NULL);
        off[c] = rand() % (n - total);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (long p = 0; p < total; p += 320)
        for (int c = 0; c < channels; c++) {
            dtmf_rx(s[c], pool + off[c] + p, 320);
            char digits[64];
            dtmf_rx_get(s[c], digits, sizeof(digits));
        }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "acc") == 0) return accuracy(argc - 2, argv + 2);
    if (argc == 5 && strcmp(argv[1], "bench") == 0)
        return bench(atoi(argv[2]), atof(argv[3]), argv[4]);
    fprintf(stderr, "usage: harness acc FILE... | harness bench CHANNELS SECONDS POOL\n");
    return 2;
}
"""


def build_harness(tmp: Path) -> Path:
    src = tmp / "spandsp_dtmf.c"
    src.write_text(HARNESS_C)
    exe = tmp / "spandsp_dtmf"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src), "-lspandsp", "-lm"], check=True)
    return exe


def run_spandsp(exe: Path, tmp: Path, cases: list[siggen.Case]) -> list[list[siggen.Detection]]:
    files = []
    for i, c in enumerate(cases):
        path = tmp / f"case{i}.ul"
        path.write_bytes(c.ulaw.tobytes())
        files.append(str(path))
    out = subprocess.run([str(exe), "acc", *files], check=True, capture_output=True, text=True)
    found: list[list[siggen.Detection]] = [[] for _ in cases]
    for line in out.stdout.splitlines():
        i, digit, pos = line.split()
        # spandsp reports at the end of its second block: date it back two blocks
        found[int(i)].append(siggen.Detection(digit, max(0, int(pos) - 204) / 8000))
    return found


def accuracy(
    exe: Path, tmp: Path, seeds: list[int], speech_minutes: float, music_minutes: float
) -> list[str]:
    rows = []
    by: dict[tuple[str, str], siggen.Score] = defaultdict(siggen.Score)
    cases = [c for seed in seeds for c in siggen.accuracy_cases(seed, full=True)]
    detail: dict[tuple[str, str, str], siggen.Score] = defaultdict(siggen.Score)
    for name, found in (
        ("switch", siggen.run_switch(cases)),
        ("spandsp", run_spandsp(exe, tmp, cases)),
    ):
        for c, f in zip(cases, found, strict=True):
            s = siggen.score(c, f)
            by[(c.category, name)].add(s)
            detail[(c.category, c.name, name)].add(s)
    rows.append("| category | goal | switch | spandsp 0.0.6 |")
    rows.append("|---|---|---|---|")
    goals = {
        "level": "detect 100 % at -10…-35 dBm0",
        "deviation": "detect 100 % at ±1.0/±1.5 %",
        "deviation-reject": "accept 0 % at ±3.5 %",
        "twist": "detect 100 %, 8 dB normal … 4 dB reverse",
        "duration": "detect 100 % of 40/40 ms",
        "duration-reject": "accept 0 % of 20/23 ms",
        "noise": "detect 100 % at SNR ≥ 15 dB",
    }
    for cat, goal in goals.items():
        cells = []
        for name in ("switch", "spandsp"):
            s = by[(cat, name)]
            if cat.endswith("reject"):
                cells.append(
                    f"{s.reported}/{s.tones} accepted ({100 * s.reported / s.tones:.1f} %)"
                )
            else:
                cells.append(
                    f"{s.hits}/{s.tones} ({100 * s.hits / s.tones:.1f} %), {s.false} extra"
                )
        rows.append(f"| {cat} | {goal} | {cells[0]} | {cells[1]} |")
    rows.append("")
    rows.append("Per case (switch / spandsp), detection or acceptance rate:")
    rows.append("")
    names = sorted({(k[0], k[1]) for k in detail})
    for cat, cname in names:
        a, b = detail[(cat, cname, "switch")], detail[(cat, cname, "spandsp")]
        key = "reported" if cat.endswith("reject") else "hits"
        rows.append(
            f"- {cat} {cname}: {100 * getattr(a, key) / a.tones:.1f} % / "
            f"{100 * getattr(b, key) / b.tones:.1f} %"
        )
    rows.append("")
    # talk-off
    if not siggen.espeak_available():
        rows.append("talk-off (speech): espeak-ng missing, not measured")
    else:
        speech = list(siggen.speech(speech_minutes * 60, seed=7))
        seconds = sum(c.ulaw.size for c in speech) / 8000
        sw = sum(len(r) for r in siggen.run_switch(speech))
        sp = sum(len(r) for r in run_spandsp(exe, tmp, speech))
        rows.append(
            f"talk-off, speech: {seconds / 60:.1f} min espeak-ng "
            f"({len(siggen.SPEECH_VOICES)} voices, -25…-15 dBm0): "
            f"switch {sw} false digits, spandsp {sp}"
        )
    music = siggen.music(music_minutes * 60, seed=11)
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, found in (
        ("switch", siggen.run_switch(music)),
        ("spandsp", run_spandsp(exe, tmp, music)),
    ):
        for c, f in zip(music, found, strict=True):
            kinds[c.name.split()[0]][0 if name == "switch" else 1] += len(f)
    total = [sum(v[0] for v in kinds.values()), sum(v[1] for v in kinds.values())]
    per = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(kinds.items()))
    rows.append(
        f"talk-off, music-like: {music_minutes:.0f} min: switch {total[0]} false digits, "
        f"spandsp {total[1]} (switch/spandsp by kind: {per})"
    )
    return rows


def throughput_pool(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    parts = []
    if siggen.espeak_available():
        parts += [c.linear.astype(np.float32) for c in siggen.speech(seconds, seed=3)]
    else:
        parts.append(rng.normal(0, 500, int(seconds * 8000)).astype(np.float32))
    dtmf = [
        siggen.dtmf_case(rng, category="x", name="x").linear.astype(np.float32) for _ in range(2)
    ]
    half = len(parts) // 2
    return np.concatenate(parts[:half] + [dtmf[0]] + parts[half:] + [dtmf[1]])


def switch_throughput(pool: np.ndarray, channels: int, seconds: float, tick: int) -> float:
    rng = np.random.default_rng(2)
    n = int(seconds * 8000)
    offsets = rng.integers(0, pool.size - n, channels)
    det = InbandDetector(capacity=channels)
    for _ in range(channels):
        det.add_channel()
    index = offsets[:, None] + np.arange(tick)[None, :]
    blocks = [pool[index + p] for p in range(0, n - tick + 1, tick)]
    t0 = time.process_time()
    for i, block in enumerate(blocks):
        det.process(block, (i + 1) * tick / 8000)
    return time.process_time() - t0


def throughput(exe: Path, tmp: Path, counts: list[int], tick: int, repeat: int) -> list[str]:
    """Median CPU time of ``repeat`` runs per detector and count, runs alternating."""
    pool = throughput_pool(120)
    pool_file = tmp / "pool.s16"
    pool.astype(np.int16).tofile(pool_file)
    rows = [
        "| channels | audio s | switch CPU s | switch channels/core | spandsp CPU s | "
        "spandsp channels/core | switch/spandsp | per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for channels in counts:
        seconds = 20.0 if channels <= 100 else (4.0 if channels <= 1000 else 2.0)
        sw_runs, sp_runs = [], []
        for _ in range(repeat):
            sw_runs.append(switch_throughput(pool, channels, seconds, tick))
            out = subprocess.run(
                [str(exe), "bench", str(channels), str(seconds), str(pool_file)],
                check=True,
                capture_output=True,
                text=True,
            )
            sp_runs.append(float(out.stdout.strip()))
        sw, sp = float(np.median(sw_runs)), float(np.median(sp_runs))
        sw_rate = channels * seconds / sw
        sp_rate = channels * seconds / sp
        per_run = " / ".join(f"{b / a:.2f}" for a, b in zip(sw_runs, sp_runs, strict=True))
        rows.append(
            f"| {channels} | {seconds:.0f} | {sw:.3f} | {sw_rate:,.0f} | {sp:.3f} | "
            f"{sp_rate:,.0f} | {sw_rate / sp_rate:.2f} | {per_run} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--speech-minutes", type=float, default=32.0)
    parser.add_argument("--music-minutes", type=float, default=10.0)
    parser.add_argument("--tick", type=int, default=320, help="samples per process() call")
    parser.add_argument(
        "--repeat", type=int, default=3, help="throughput runs per count (median reported)"
    )
    parser.add_argument(
        "--only", choices=("accuracy", "throughput"), help="run one part of the benchmark"
    )
    parser.add_argument("--counts", help="comma-separated channel counts for the throughput part")
    args = parser.parse_args()
    seeds = [1] if args.quick else [1, 2, 3, 4]
    speech = 1.0 if args.quick else args.speech_minutes
    music = 1.0 if args.quick else args.music_minutes
    counts = [1, 100, 1000] if args.quick else [1, 100, 1000, 10000]
    if args.counts:
        counts = [int(c) for c in args.counts.split(",")]
    print(
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
        f"affinity={sorted(os.sched_getaffinity(0))} numpy={np.__version__}"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_harness(tmp)
        if args.only != "throughput":
            print("\n## Accuracy\n")
            print("\n".join(accuracy(exe, tmp, seeds, speech, music)))
        if args.only == "accuracy":
            return
        print(f"\n## Throughput (tick {args.tick} samples = {args.tick / 8:.0f} ms)\n")
        print(
            f"median of {args.repeat} runs per count, each detector in turn; "
            "'per run' is switch/spandsp of each run\n"
        )
        print("\n".join(throughput(exe, tmp, counts, args.tick, args.repeat)))


if __name__ == "__main__":
    main()

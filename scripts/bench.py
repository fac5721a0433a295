"""Print the figures we track: parsing and rendering speed, AWS calls per run, cold import time, package size.

    make bench            (or: .venv/bin/python scripts/bench.py [parsing rendering calls many imports sizes])

Counts are exact (botocore ``before-call`` hooks on the handlers' own clients);
import times are wall-clock medians of fresh interpreters, so they vary with the
machine; sizes come from ``.aws-sam/build`` (run ``make build`` first).
A figure with a budget is measured side by side with its anchor in the same run
and printed as a ratio with PASS/FAIL; the script exits 1 when a budget fails.
Timings stay here: the tests assert only what is deterministic (the call budget).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_env import (
    CALLS,
    ROOT,
    SECONDS,
    clear_counts,
    count_every_aws_call,
    local_stack,
    quiet,
    scheduled_event,
)

#: issue 7: parsing a 500-row cp932 listing at least 10x faster than BeautifulSoup's html.parser
PARSING_BUDGET = 10.0


def parsing_speed(rows: int = 500, rounds: int = 15) -> bool:
    """Our parse of a ``rows``-row classic-cgi listing against BeautifulSoup on the same bytes.

    Both start from the page as served (cp932, charset only in <meta>) and end with
    the same six fields per upload (id by the preset's id_regex, title, absolute URL,
    file name, size, date), checked equal. Rounds alternate between the two, and each
    side's fastest round counts (the least disturbed by other load on the machine).
    """
    import re
    import urllib.request
    from urllib.parse import urljoin

    from bs4 import BeautifulSoup

    from bmsuploader.config.sources import parse_sources
    from bmsuploader.fetch.decoding import decode_page
    from bmsuploader.fetch.parsing import parse_page
    from bmsuploader_local.uploader_site import UploaderSite

    with UploaderSite.with_sample_uploads(rows, rows_per_page=rows) as site:
        url = site.listing_url
        with urllib.request.urlopen(url) as response:
            body: bytes = response.read()
    source = parse_sources({"source": [{"name": "bench", "url": url, "preset": "classic-cgi"}]}).sources[0]
    assert source.id_regex is not None
    id_regex = re.compile(source.id_regex)

    def ours() -> list[tuple[str | None, ...]]:
        page = parse_page(source, decode_page(body).text, page_url=url)
        return [(e.entry_id, e.title, e.url, e.filename, e.size, e.uploaded_at) for e in page.entries]

    def collapse(text: str) -> str:
        return " ".join(text.split())

    def beautifulsoup() -> list[tuple[str | None, ...]]:
        soup = BeautifulSoup(decode_page(body).text, "html.parser")
        entries = []
        for tr in soup.find_all("tr"):
            cells = tr.find_all("td", recursive=False)
            link = cells[0].find("a", href=True) if cells else None
            href = str(link["href"]) if link is not None else "?"
            if "?" in href and "get=" not in href:  # no link, or a pager link: not an upload
                continue
            assert link is not None
            filename = collapse(link.get_text(" "))
            match = id_regex.search(href)
            assert match is not None
            title = collapse(cells[1].get_text(" ")) or filename
            size, date = collapse(cells[2].get_text(" ")), collapse(cells[3].get_text(" "))
            entries.append((match.group(1), title, urljoin(url, href), filename, size, date))
        return entries

    assert ours() == beautifulsoup(), "the two parsers disagree: the comparison would be meaningless"
    best = {"ours": float("inf"), "bs4": float("inf")}
    for _ in range(rounds):
        for name, parse in (("ours", ours), ("bs4", beautifulsoup)):
            started = time.perf_counter()
            parse()
            best[name] = min(best[name], time.perf_counter() - started)
    ratio = best["bs4"] / best["ours"]
    verdict = "PASS" if ratio >= PARSING_BUDGET else "FAIL"
    print(f"Parsing a {rows}-row cp932 listing, 6 fields, decoding included (fastest of {rounds} rounds)")
    ours_ms, bs4_ms = best["ours"] * 1000, best["bs4"] * 1000
    print(
        f"  bmsuploader {ours_ms:6.1f} ms   BeautifulSoup html.parser {bs4_ms:6.1f} ms   "
        f"{ratio:5.1f}x faster (budget >= {PARSING_BUDGET:.0f}x)  {verdict}"
    )
    return verdict == "PASS"


#: issue 7: AWS calls of an idle fetcher run (one source), and the poster's per post
IDLE_CALLS_BUDGET = 3
#: issue 7: 200 sources, pages answering after 300 ms
MANY_SOURCES_BUDGET_S = 10.0
#: issue 7: cold import of each handler module against `import boto3` in the same loop
IMPORT_BUDGET_RATIO = 1.5
#: issue 7: the poster's own package (without the shared layer)
POSTER_PACKAGE_BUDGET_MIB = 4.0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def api_calls() -> bool:
    from bmsuploader_local.fake_x import FakeX
    from bmsuploader_local.lambda_runtime import (
        FakeContext,
        delete_succeeded,
        load_handler,
        receive_as_event,
    )
    from bmsuploader_local.uploader_site import UploaderSite

    event = scheduled_event()
    with (
        local_stack("bench") as resources,
        UploaderSite.with_sample_uploads(60, rows_per_page=50) as site,
        FakeX() as fake_x,
        tempfile.TemporaryDirectory() as tmp,
    ):
        sources = Path(tmp) / "sources.toml"
        sources.write_text(
            f'[[source]]\nname = "bench"\nkind = "html"\npreset = "classic-cgi"\nurl = "{site.listing_url}"\n'
        )
        os.environ.update(SOURCES_FILE=str(sources), X_API_BASE_URL=fake_x.base_url, DRY_RUN="false")
        fetcher = load_handler("fetcher")
        count_every_aws_call()

        def fetch_run(label: str, budget: int | None = None) -> bool:
            clear_counts()
            with quiet():
                fetcher.lambda_handler(event, FakeContext(timeout_seconds=120))
            calls = sum(CALLS.values())
            verdict = "" if budget is None else f"(budget <= {budget})  {_verdict(calls <= budget)}"
            print(f"  fetcher, {label:<28} {calls:>3} calls {verdict:<22} {dict(sorted(CALLS.items()))}")
            return budget is None or calls <= budget

        print("AWS API calls per run (one source, 50-row page)")
        fetch_run("first run (baseline of 50)")
        passed = fetch_run("304 Not Modified", IDLE_CALLS_BUDGET)
        newest = site.uploads[-1]
        site.uploads[-1] = dataclasses.replace(newest, downloads=newest.downloads + 1)
        passed = fetch_run("page changed, 0 new", IDLE_CALLS_BUDGET) and passed
        for i in range(10):
            site.add_upload(f"★{i} bench")
        fetch_run("10 new")

        poster = load_handler("poster")
        sqs_event = receive_as_event(resources.queue_url)
        clear_counts()
        with quiet():
            response = poster.lambda_handler(sqs_event, FakeContext(function_name="poster"))
        n = len(sqs_event["Records"])
        print(
            f"  poster, a batch of {n} messages (cold) {sum(CALLS.values()):>3} calls  "
            f"{dict(sorted(CALLS.items()))} + {len(fake_x.requests)} X requests"
        )
        delete_succeeded(resources.queue_url, sqs_event, response)
        print(
            f"  poster, per post: {sum(CALLS.values()) / max(n, 1):.1f} AWS calls "
            "(3 pinned in test_api_budget, + 1 SSM per cold batch)"
        )
    return passed


#: What the Lambda runtime itself provides (/var/runtime): boto3 and its dependencies.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def lambda_paths(build: Path, into: Path) -> dict[str, list[str]]:
    """``sys.path`` as Lambda lays it out for each function, from the ``sam build`` output.

    The function's folder (/var/task), the layer (/opt/python), then the runtime's boto3 and
    its dependencies (/var/runtime), each made of links under ``into``. So an import meets
    what ships, compiled as it ships (``make build``'s unchecked-hash byte-code), and nothing
    of this virtualenv's dev tools (httpx here also finds click, rich and pygments, and imports
    its command line with them). The build has the runtime's machine (arm64): a package with
    extension modules for another machine is linked to this virtualenv's copy instead, the
    version uv.lock pins for both (``scripts/check_build.py`` checks the build's).
    """
    installed = Path(sysconfig.get_paths()["purelib"])
    here = _elf_machine(Path(sys.executable).resolve())

    def runs_here(entry: Path) -> bool:
        return not entry.is_dir() or all(_elf_machine(so) == here for so in entry.rglob("*.so"))

    def lay_out(folder: Path, name: str) -> str:
        target = into / name
        target.mkdir()
        for entry in folder.iterdir():
            (target / entry.name).symlink_to(entry if runs_here(entry) else installed / entry.name)
        return str(target)

    runtime = into / "runtime"
    (runtime / "__pycache__").mkdir(parents=True)
    for name in RUNTIME_PACKAGES:
        if (installed / name).is_dir():
            (runtime / name).symlink_to(installed / name)
        else:  # a single module: its byte-code is in site-packages' own __pycache__
            (runtime / f"{name}.py").symlink_to(installed / f"{name}.py")
            for pyc in (installed / "__pycache__").glob(f"{name}.*.pyc"):
                (runtime / "__pycache__" / pyc.name).symlink_to(pyc)
    layer = lay_out(build / "SharedLayer" / "python", "layer")
    return {
        "boto3": [str(runtime)],
        **{
            function: [lay_out(build / f"{function.title()}Function", function), layer, str(runtime)]
            for function in ("fetcher", "poster")
        },
    }


def _elf_machine(path: Path) -> bytes:
    """The machine an ELF file (an interpreter, an extension module) is built for: e_machine."""
    with path.open("rb") as binary:
        return binary.read(20)[18:20]


def import_times(runs: int = 9) -> bool:
    build = ROOT / ".aws-sam" / "build"
    print(
        f"Cold import of each handler module as built (sam build output, laid out as Lambda's "
        f"sys.path) vs `import boto3` from the runtime's packages, in the same loop of fresh "
        f"interpreters without site-packages (median of {runs})"
    )
    if not (build / "FetcherFunction").is_dir():
        print("  .aws-sam/build not found: run `make build` first  FAIL")
        return False
    env = {
        **os.environ,
        "TABLE_NAME": "t",
        "QUEUE_URL": "https://sqs.ap-northeast-1.amazonaws.com/1/q.fifo",
        "DLQ_URL": "https://sqs.ap-northeast-1.amazonaws.com/1/d.fifo",
        "IDEMPOTENCY_TABLE": "i",
        "X_PARAMETER_PATH": "/bench/x",
    }
    for name in ("AWS_ENDPOINT_URL", "PYTHONPATH"):
        env.pop(name, None)
    samples: dict[str, list[float]] = {"boto3": [], "fetcher": [], "poster": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = lambda_paths(build, Path(tmp))
        libraries = {function: library_imports(paths[function], env) for function in ("fetcher", "poster")}
        for function in libraries:
            samples[f"{function} libraries"] = []
        for _ in range(runs):  # interleaved, so machine load hits the anchor and the handlers alike
            samples["boto3"].append(timed(["import boto3"], paths["boto3"], env))
            for function in ("fetcher", "poster"):
                samples[function].append(timed(["import app"], paths[function], env))
                samples[f"{function} libraries"].append(timed(libraries[function], paths[function], env))
    anchor = statistics.median(samples["boto3"])
    print(f"  {'boto3':<8} {anchor:7.0f} ms  (the anchor)")
    passed = True
    for function in ("fetcher", "poster"):
        median = statistics.median(samples[function])
        ratio = median / anchor
        passed = passed and ratio <= IMPORT_BUDGET_RATIO
        print(
            f"  {function:<8} {median:7.0f} ms  {ratio:4.2f}x boto3 (budget <= {IMPORT_BUDGET_RATIO}x)  "
            f"{_verdict(ratio <= IMPORT_BUDGET_RATIO)}"
        )
        floor = statistics.median(samples[f"{function} libraries"])
        # Each round's handler minus the same round's libraries: steadier than a difference of medians.
        rounds = zip(samples[function], samples[f"{function} libraries"], strict=True)
        ours = statistics.median(whole - alone for whole, alone in rounds)
        roots = sorted({statement.split()[1].split(".")[0] for statement in libraries[function]})
        below = floor / anchor > IMPORT_BUDGET_RATIO
        print(
            f"    its libraries alone {floor:7.0f} ms  {floor / anchor:4.2f}x boto3; our code adds "
            f"{ours:.0f} ms = {ours / anchor:4.2f}x"
            + ("  (the budget is below the libraries' own import)" if below else "")
            + f"\n      ({len(libraries[function])} module-level imports of: {', '.join(roots)})"
        )
    return passed


#: Run in the handler's interpreter after ``import app``: the module-level import statements
#: of our own modules (the handler and bmsuploader.*) that name a third-party module.
_LIBRARY_IMPORTS = """
import ast, json, sys
sys.path[:0] = {paths!r}
import app
ours = [m for name, m in list(sys.modules.items()) if name == "app" or name.split(".")[0] == "bmsuploader"]
statements = {{}}
for module in ours:
    if not getattr(module, "__file__", None):
        continue
    for node in ast.parse(open(module.__file__, encoding="utf-8").read()).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        roots = {{name.split(".")[0] for name in names}}
        if roots & {{"bmsuploader", "__future__"}} or roots <= sys.stdlib_module_names:
            continue
        statements[ast.unparse(node)] = None
print(json.dumps(list(statements)))
"""


def library_imports(paths: list[str], env: dict[str, str]) -> list[str]:
    """The third-party imports the handler's own modules make at import time, as statements.

    Timed alone in a fresh interpreter they are the floor of the handler's cold import:
    what the libraries cost before any code of ours runs (what they import in turn is theirs).
    """
    out = subprocess.run(
        [sys.executable, "-S", "-W", "ignore", "-c", _LIBRARY_IMPORTS.format(paths=paths)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    statements: list[str] = json.loads(out.strip().splitlines()[-1])
    return statements


def timed(statements: list[str], paths: list[str], env: dict[str, str]) -> float:
    """Milliseconds ``statements`` take in a fresh interpreter without site-packages."""
    code = (
        f"import sys, time; sys.path[:0] = {paths!r}; t = time.perf_counter()\n"
        + "\n".join(statements)
        + "\nprint((time.perf_counter() - t) * 1000)"
    )
    command = [sys.executable, "-S", "-W", "ignore", "-c", code]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


@dataclasses.dataclass
class ManySources:
    #: wall seconds of the run with news on every source
    wall: float
    #: AWS calls of that run, and the seconds they took (per service:Operation)
    calls: dict[str, int]
    seconds: dict[str, float]
    #: AWS calls of an idle run afterwards (every page 304)
    idle_calls: int


def many_sources(n: int = 200, hosts: int = 20, latency: float = 0.3) -> ManySources:
    """One fetcher run over ``n`` sources on ``hosts`` slow sites (each answer waits
    ``latency`` s), every source with one new entry; then an idle run.

    The sources are listed host by host, a site's boards together, as a sources file is
    written: the order that costs most when a read worker can be stuck at a busy host's gate.
    """
    from bmsuploader_local.lambda_runtime import FakeContext, load_handler
    from bmsuploader_local.uploader_site import UploaderSite

    event = scheduled_event()
    with (
        local_stack("bench-many"),
        contextlib.ExitStack() as running,
        tempfile.TemporaryDirectory() as tmp,
    ):
        sites = [running.enter_context(UploaderSite.with_sample_uploads(5)) for _ in range(hosts)]
        sources = Path(tmp) / "sources.toml"
        sources.write_text(
            "".join(
                f'[[source]]\nname = "s{i}"\nkind = "html"\npreset = "classic-cgi"\n'
                f'url = "{sites[i * hosts // n].listing_url}?board={i}"\n\n'
                for i in range(n)
            )
        )
        os.environ.update(SOURCES_FILE=str(sources), MAX_ENQUEUE_PER_RUN="1000")
        fetcher = load_handler("fetcher")
        with quiet():
            fetcher.lambda_handler(event, FakeContext(timeout_seconds=120))  # baselines
        for site in sites:
            site.latency = latency
            site.add_upload("★1 new on every board")
        count_every_aws_call()
        clear_counts()
        started = time.perf_counter()
        with quiet():
            fetcher.lambda_handler(event, FakeContext(timeout_seconds=120))
        wall = time.perf_counter() - started
        calls, seconds = dict(CALLS), dict(SECONDS)
        clear_counts()
        with quiet():
            fetcher.lambda_handler(event, FakeContext(timeout_seconds=120))  # idle: every page 304
        return ManySources(wall, calls, seconds, sum(CALLS.values()))


def package_sizes() -> bool:
    build = ROOT / ".aws-sam" / "build"
    print("Package size (sam build output, unzipped)")
    if not build.is_dir():
        print("  .aws-sam/build not found: run `make build` first  FAIL")
        return False
    passed = compiled = True
    for name in ("FetcherFunction", "PosterFunction", "SharedLayer"):
        folder = build / name
        if not folder.is_dir():
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        files = sum(1 for f in folder.rglob("*") if f.is_file())
        pycs = sum(1 for f in folder.rglob("*.pyc"))
        sources = sum(1 for f in folder.rglob("*.py"))
        budget = ""
        if name == "PosterFunction":
            ok = size / 1_048_576 <= POSTER_PACKAGE_BUDGET_MIB
            passed = passed and ok
            budget = f"(budget <= {POSTER_PACKAGE_BUDGET_MIB:.0f} MiB)  {_verdict(ok)}"
        # The budget was set when the build shipped no byte-code; what it adds is printed apart.
        pyc_bytes = sum(f.stat().st_size for f in folder.rglob("*.pyc"))
        ours = sum(
            f.stat().st_size for f in folder.rglob("*") if f.is_file() and _ours(f.relative_to(folder))
        )
        print(
            f"  {name:<16} {size / 1_048_576:6.1f} MiB ({(size - pyc_bytes) / 1_048_576:.1f} without "
            f"byte-code) in {files} files, {pycs} .pyc for {sources} .py  {budget}\n"
            f"    of which our code {ours / 1024:,.0f} KiB, the libraries {(size - ours) / 1_048_576:.1f} MiB"
            + (
                "  (the budget is below the libraries' own size)"
                if name == "PosterFunction" and (size - ours) / 1_048_576 > POSTER_PACKAGE_BUDGET_MIB
                else ""
            )
        )
        compiled = compiled and pycs >= sources
    print(f"  byte-code for every module (scripts/check_build.py checks each one)  {_verdict(compiled)}")
    print(f"  (built {datetime.fromtimestamp(build.stat().st_mtime, UTC):%Y-%m-%d %H:%M} UTC)")
    return passed and compiled


def _ours(relative: Path) -> bool:
    """A file of the build that is our code or data, not a library's (with its byte-code)."""
    top = relative.parts[1] if relative.parts[0] == "python" else relative.parts[0]  # the layer's python/
    return (
        top in {"app.py", "bmsuploader", "requirements.txt"}
        or top.startswith("sources")
        or (top == "__pycache__" and relative.name.startswith("app."))
    )


#: issue 12: rendering a post whose field holds 10,000 characters (the poster's timeout is 30 s)
RENDERING_BUDGET_S = 1.0


def rendering_time(rounds: int = 5) -> bool:
    """The worst rendering cases found by fuzzing, at 10,000 characters, slowest round counts.

    ``"a." * 5000`` is the text that made URL extraction super-linear (63 s at 4,000
    characters with twitter-text-parser); the others fill every free-text field.
    """
    from bmsuploader.config.templates import DEFAULT_TEMPLATE
    from bmsuploader.contract.message import EntryMessage
    from bmsuploader.post.rendering import render_post

    base = EntryMessage(
        source="bench",
        entry_id="1",
        title="t",
        url="https://uploader.example.jp/up/src/up00123.zip",
        fetched_at=datetime(2026, 5, 1, tzinfo=UTC),
    )
    cases = {
        "comment 'a.' x 5000": {"comment": "a." * 5000},
        "title '曲' x 10000": {"title": "曲" * 10000},
        "three fields 'a.' x 5000": {"title": "a." * 5000, "comment": "x." * 5000, "filename": "f." * 5000},
    }
    render_post(base, template=DEFAULT_TEMPLATE, include_link=True)  # compile the patterns first
    print(f"Rendering one post with a 10,000-character field (slowest of {rounds} rounds)")
    passed = True
    for label, update in cases.items():
        message = base.model_copy(update=update)  # beyond the schema's limits on purpose
        worst = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            render_post(message, template="{title} / {comment} / {filename} / {url}", include_link=True)
            worst = max(worst, time.perf_counter() - started)
        verdict = "PASS" if worst <= RENDERING_BUDGET_S else "FAIL"
        passed = passed and verdict == "PASS"
        print(
            f"  {label:<26} {worst * 1000:7.0f} ms (budget <= {RENDERING_BUDGET_S * 1000:.0f} ms)  {verdict}"
        )
    return passed


def many_sources_row() -> bool:
    many = many_sources()
    ok = many.wall <= MANY_SOURCES_BUDGET_S
    aws = ", ".join(
        f"{name.split(':')[1]} {many.calls[name]} in {many.seconds[name]:.1f} s"
        for name in sorted(many.calls, key=lambda name: -many.seconds[name])
    )
    print(
        f"200 sources (20 hosts answering after 300 ms, listed host by host), one with news each: "
        f"{many.wall:.1f} s wall "
        f"(budget <= {MANY_SOURCES_BUDGET_S:.0f} s)  {_verdict(ok)}\n"
        f"  of which AWS calls (moto, on loopback in this process): {aws}\n"
        f"  idle run afterwards: {many.idle_calls} AWS calls (state reads of 100 and writes of 25 keys)"
    )
    return ok


#: sections that run alone: `bench.py parsing`, `bench.py many imports`, ...
SECTIONS = {
    "parsing": parsing_speed,
    "rendering": rendering_time,
    "calls": api_calls,
    "many": many_sources_row,
    "imports": import_times,
    "sizes": package_sizes,
}


def main(sections: list[str]) -> int:
    started = time.perf_counter()
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s) {sorted(unknown)}; choose from {sorted(SECTIONS)}")
        return 2
    budgets_met = []
    for name, row in SECTIONS.items():
        if not sections or name in sections:
            budgets_met.append(row())
            print()
    print(f"bench took {time.perf_counter() - started:.1f} s")
    return 0 if all(budgets_met) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

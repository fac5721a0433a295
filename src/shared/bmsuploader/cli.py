"""The ``bmsuploader`` command: check a source config, preview posts, run locally.

::

    bmsuploader parse   --sources FILE --source NAME (--url URL | --page FILE)
    bmsuploader preview --sources FILE --source NAME (--url URL | --page FILE)
    bmsuploader run-local [--new-upload] [--dry-run]
    bmsuploader serve-local [--aws-port 5000] [--site-port 8080] [--x-port 8081]

``parse`` prints the entries a source yields, one JSON object per line with
the message-body fields; ``preview`` prints the posts they would become:
``{source, entry_id, text, weighted_length}``. Both exit 2 with a one-line
error on a bad config or a page that does not match it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bmsuploader.config.sources import Source, load_sources
from bmsuploader.contract.errors import BmsUploaderError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.settings import SourcesSettings


def _add_page_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sources", type=Path, default=None, help="sources file (default: SOURCES_FILE or bundled)"
    )
    parser.add_argument("--source", required=True, help="the source's name in the file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="fetch this URL (e.g. the source's url, or an older page)")
    where.add_argument("--page", type=Path, help="read a saved page (raw bytes, any encoding)")


def _messages(args: argparse.Namespace) -> tuple[Source, list[EntryMessage]]:
    from bmsuploader.fetch.decoding import decode_page
    from bmsuploader.fetch.fetching import PageFetcher
    from bmsuploader.fetch.parsing import parse_page
    from bmsuploader.fetch.tables import read_table

    config = load_sources(args.sources or SourcesSettings.from_env().sources_file)
    try:
        source = config.get(args.source)
    except KeyError:
        names = ", ".join(s.name for s in config.sources)
        raise BmsUploaderError(f"no source named {args.source!r} in the file; known: {names}") from None
    parsed = None
    if args.url:
        fetcher = PageFetcher()
        try:
            if source.kind == "bmstable":  # the table's page (or header), then its header and data
                table = read_table(
                    fetcher, source.model_copy(update={"url": args.url}), validators=None, linked=()
                )
                parsed = table.parsed
            else:
                page = fetcher.fetch(args.url, source=source.name, encoding=source.page_encoding)
        finally:
            fetcher.close()
        if parsed is None:
            text, page_url = page.text, page.url
    else:
        try:
            body = args.page.read_bytes()
        except OSError as exc:
            raise BmsUploaderError(f"cannot read {args.page}: {exc.strerror}") from exc
        # A table's saved file is its data JSON (read without its header: no name or symbol).
        encoding = "utf-8" if source.kind == "bmstable" else source.page_encoding
        text, page_url = decode_page(body, override=encoding).text, source.url
    now = datetime.now(UTC)
    if parsed is None:
        parsed = parse_page(source, text, page_url=page_url)
    if parsed.duplicates:
        _note(
            f"{parsed.duplicates} item(s) repeat an earlier item's id and were dropped (the first is kept): "
            + ", ".join(dict.fromkeys(parsed.duplicate_ids))
        )
    if parsed.empty:
        _note("the page lists nothing (allowed for this source: allow_empty)")
    return source, [entry.to_message(source.name, now) for entry in parsed.entries]


def _note(message: str) -> None:
    """What the operator should know about a page that still parsed (stderr, so stdout stays JSON)."""
    print(f"bmsuploader: note: {message}", file=sys.stderr)


def cmd_parse(args: argparse.Namespace) -> int:
    _, messages = _messages(args)
    for message in messages:
        print(message.model_dump_json())
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from bmsuploader.post.rendering import render_post

    source, messages = _messages(args)
    for message in messages:
        post = render_post(message, template=source.template, include_link=source.include_link)
        line = {
            "source": message.source,
            "entry_id": message.entry_id,
            "text": post.text,
            "weighted_length": post.weighted_length,
        }
        print(json.dumps(line, ensure_ascii=False))
    return 0


def cmd_run_local(args: argparse.Namespace) -> int:
    from bmsuploader_local.run import run_local

    return run_local(new_upload=args.new_upload, dry_run=args.dry_run, state_dir=args.state_dir)


def cmd_serve_local(args: argparse.Namespace) -> int:
    from bmsuploader_local.run import serve_local

    return serve_local(
        host=args.host,
        aws_port=args.aws_port,
        site_port=args.site_port,
        x_port=args.x_port,
        feed_port=args.feed_port,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmsuploader", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    parse = commands.add_parser("parse", help="print a source's entries as JSON lines")
    _add_page_args(parse)
    parse.set_defaults(func=cmd_parse)
    preview = commands.add_parser("preview", help="print the posts a source's entries would become")
    _add_page_args(preview)
    preview.set_defaults(func=cmd_preview)
    run = commands.add_parser("run-local", help="run the whole pipeline locally (no AWS account needed)")
    run.add_argument("--new-upload", action="store_true", help="add one upload to the sample site first")
    run.add_argument("--dry-run", action="store_true", help="post to the log only (DRY_RUN=true)")
    run.add_argument(
        "--state-dir", type=Path, default=Path(".local-run"), help="where state is kept between runs"
    )
    run.set_defaults(func=cmd_run_local)
    serve = commands.add_parser("serve-local", help="keep moto, the sample site and fake X up for sam local")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 for Docker on Linux)")
    serve.add_argument("--aws-port", type=int, default=5000)
    serve.add_argument("--site-port", type=int, default=8080)
    serve.add_argument("--x-port", type=int, default=8081)
    serve.add_argument("--feed-port", type=int, default=8082)
    serve.set_defaults(func=cmd_serve_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BmsUploaderError as exc:
        print(f"bmsuploader: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `| head`
        return 0
    except KeyboardInterrupt:  # Ctrl-C in `make run`: the with-blocks above have cleaned up
        print("bmsuploader: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

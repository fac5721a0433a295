"""The ``bmsuploader`` command: check a source config, preview posts, run locally, operate a stack.

::

    bmsuploader parse   --sources FILE --source NAME (--url URL | --page FILE)
    bmsuploader preview --sources FILE --source NAME (--url URL | --page FILE) [--destination NAME]
    bmsuploader run-local [--new-upload] [--dry-run]
    bmsuploader serve-local [--aws-port 5000] [--site-port 8080] [--x-port 8081]
    bmsuploader status  [STACK] [--json]
    bmsuploader explain [STACK] SOURCE ENTRY_ID [--destination NAME] [--json]
    bmsuploader redrive [STACK] [--message-id ID ...] [--discard] [--preview] [--yes] [--json]

    STACK: [--stack NAME] [--region R] [--profile P] [--config-env ENV]  (default: samconfig.toml)
           or --local [--state-dir .local-run]  (the stack `make run` left behind)

``parse`` prints the entries a source yields, one JSON object per line with
the message-body fields; ``preview`` prints the posts they would become on each
destination that announces the source (or the one ``--destination`` names), measured by
that network's rule: ``{source, entry_id, destination, text, weighted_length, limit}``.
``status``, ``explain`` and ``redrive`` are :mod:`bmsuploader.ops`. Every command exits 2 with one line
(``bmsuploader: error: ...``) on a bad config, a page that does not match it,
or an AWS problem (no credentials, wrong region, missing stack or permission).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from bmsuploader.config.sources import Source, SourcesConfig, load_sources
from bmsuploader.contract.errors import BmsUploaderError, ConfigError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.settings import SourcesSettings

if TYPE_CHECKING:
    import boto3

    from bmsuploader.ops.stack import Deployment


def _add_page_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sources", type=Path, default=None, help="sources file (default: SOURCES_FILE or bundled)"
    )
    parser.add_argument("--source", required=True, help="the source's name in the file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="fetch this URL (e.g. the source's url, or an older page)")
    where.add_argument("--page", type=Path, help="read a saved page (raw bytes, any encoding)")


def _messages(args: argparse.Namespace) -> tuple[SourcesConfig, Source, list[EntryMessage]]:
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
    return config, source, [entry.to_message(source.name, now) for entry in parsed.entries]


def _note(message: str) -> None:
    """What the operator should know about a page that still parsed (stderr, so stdout stays JSON)."""
    print(f"bmsuploader: note: {message}", file=sys.stderr)


def cmd_parse(args: argparse.Namespace) -> int:
    _, _, messages = _messages(args)
    for message in messages:
        print(message.model_dump_json())
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from bmsuploader.post.cycle import render_for
    from bmsuploader.post.destinations import rules_for

    config, source, messages = _messages(args)
    destinations = config.destinations_of(source.name)
    if args.destination is not None:
        names = ", ".join(d.name for d in destinations) or "none"
        destinations = tuple(d for d in destinations if d.name == args.destination)
        if not destinations:
            raise BmsUploaderError(
                f"no enabled destination named {args.destination!r} announces source {source.name!r}; "
                f"these do: {names}"
            )
    for message in messages:
        for destination in destinations:
            # Rendered as the poster renders the message the fetcher sends to this destination.
            post = render_for(config, message.for_destination(destination.message_name), destination)
            line = {
                "source": message.source,
                "entry_id": message.entry_id,
                "destination": destination.name,
                "text": post.text,
                "weighted_length": post.weighted_length,
                "limit": rules_for(destination.kind).limit,
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


# --- operating a stack ----------------------------------------------------------------


def _add_stack_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="stack name (default: stack_name in samconfig.toml)")
    where.add_argument(
        "--local", action="store_true", help="the local stack `make run` left in --state-dir (no AWS account)"
    )
    parser.add_argument("--region", help="AWS region (default: region in samconfig.toml, then AWS_REGION)")
    parser.add_argument(
        "--profile", help="AWS profile (default: profile in samconfig.toml, then AWS_PROFILE)"
    )
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (e.g. staging)")
    parser.add_argument("--config-file", type=Path, default=Path("samconfig.toml"), help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, default=Path(".local-run"), help="with --local")
    parser.add_argument(
        "--sources", type=Path, default=None, help="sources file (default: SOURCES_FILE or the bundled one)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")


@contextmanager
def _stack(
    args: argparse.Namespace, *, writes: bool = False
) -> Iterator[tuple[Deployment, boto3.Session, SourcesConfig]]:
    """The deployment the flags name, a session to reach it, and the sources it was deployed with."""
    import boto3

    from bmsuploader.ops.stack import Deployment, describe, session_for, target_from_samconfig

    if not args.local:
        target = target_from_samconfig(
            args.config_file,
            config_env=args.config_env,
            stack=args.stack,
            region=args.region,
            profile=args.profile,
        )
        session = session_for(target)
        deployment = describe(session, target)
        yield deployment, session, load_sources(args.sources or SourcesSettings.from_env().sources_file)
        return
    from bmsuploader_local.aws import REGION
    from bmsuploader_local.saved_stack import local_stack

    if not (args.state_dir / "aws.json").is_file():
        raise BmsUploaderError(f"no local run in {args.state_dir}: run `make run` first")
    with local_stack(args.state_dir, save=writes, handlers=False) as resources:
        session = boto3.Session()
        deployment = Deployment.from_stack(
            resources.stack_name, REGION, resources.outputs, resources.parameters
        )
        sources_file = args.sources or args.state_dir / "sources.toml"
        if not sources_file.is_file():
            sources_file = SourcesSettings.from_env().sources_file
        yield deployment, session, load_sources(sources_file)


def _print_json(document: object) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2))


def cmd_status(args: argparse.Namespace) -> int:
    from bmsuploader.ops import status

    with _stack(args) as (deployment, session, sources):
        now = datetime.now(UTC)
        report = status.collect(deployment, sources, session, now)
    if args.json:
        _print_json(status.to_json(report))
    else:
        print(status.render(report))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from bmsuploader.ops import explain

    with _stack(args) as (deployment, session, sources):
        now = datetime.now(UTC)
        found = explain.explain(
            deployment,
            sources,
            session,
            source=args.source,
            entry_id=args.entry_id,
            now=now,
            destination=args.destination,
        )
    if args.json:
        _print_json(explain.to_json(found))
    else:
        print(explain.render(found, now))
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from bmsuploader.aws.idempotency import Attempts, PostRecords
    from bmsuploader.aws.queue import DeadLetters, EntryQueue
    from bmsuploader.ops import redrive

    chosen = set(args.message_id) if args.message_id else None
    if args.discard and not chosen:
        raise ConfigError("redrive --discard drops only the messages named with --message-id")
    with _stack(args, writes=args.yes) as (deployment, session, sources):
        dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
        records = PostRecords(deployment.poster.idempotency_table, deployment.poster_function_name, dynamodb)
        dead_letters = DeadLetters(deployment.poster.dlq_url, sqs)
        held = dead_letters.depth().in_flight
        attempts = Attempts(deployment.poster.idempotency_table, deployment.poster_function_name, dynamodb)
        queue = EntryQueue(deployment.poster.queue_url, sqs) if args.yes else None
        candidates, outcome = redrive.redrive(
            dead_letters,
            lambda letter: redrive.decide(letter, records, sources, chosen, discard=args.discard),
            queue,
            chosen=chosen,
            forget=lambda m: attempts.forget_unknown(m.source, m.entry_id, m.destination),
        )
    missing = sorted((chosen or set()) - {c.letter.message_id for c in candidates})
    if args.json:
        document: dict[str, object] = {
            "acted": args.yes,
            "messages": [redrive.to_json(c, preview=args.preview) for c in candidates],
            "not_found": missing,
        }
        if outcome is not None:
            document["redriven"] = [c.letter.message_id for c in outcome.redriven]
            document["dropped"] = [c.letter.message_id for c in outcome.dropped]
            document["failed"] = [{"message_id": c.letter.message_id, "error": e} for c, e in outcome.failed]
        _print_json(document)
    else:
        print(redrive.render(candidates, outcome, preview=args.preview, missing=missing, held=held))
    return 1 if outcome is not None and outcome.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmsuploader", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    parse = commands.add_parser("parse", help="print a source's entries as JSON lines")
    _add_page_args(parse)
    parse.set_defaults(func=cmd_parse)
    preview = commands.add_parser("preview", help="print the posts a source's entries would become")
    _add_page_args(preview)
    preview.add_argument(
        "--destination", help="only this destination (default: every one that announces the source)"
    )
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
    status = commands.add_parser("status", help="sources, queues, backlog, spend and lease of a stack")
    _add_stack_args(status)
    status.set_defaults(func=cmd_status)
    explain = commands.add_parser("explain", help="what happened to one upload, and where it waits")
    explain.add_argument("source", metavar="SOURCE")
    explain.add_argument("entry_id", metavar="ENTRY_ID")
    explain.add_argument(
        "--destination", default="x", metavar="NAME", help="the destination to ask about (default: x)"
    )
    _add_stack_args(explain)
    explain.set_defaults(func=cmd_explain)
    redrive = commands.add_parser(
        "redrive", help="list the dead-letter queue; with --yes, send its messages back to the queue"
    )
    _add_stack_args(redrive)
    redrive.add_argument(
        "--message-id", action="append", help="only this dead-letter message (repeatable; default: all)"
    )
    redrive.add_argument("--preview", action="store_true", help="show how each would render now")
    redrive.add_argument(
        "--discard",
        action="store_true",
        help="drop the --message-id messages instead (their post is already there: a Discord "
        "message that may have been posted)",
    )
    redrive.add_argument("--yes", action="store_true", help="act (default: a dry run that changes nothing)")
    redrive.set_defaults(func=cmd_redrive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BmsUploaderError as exc:
        print(f"bmsuploader: error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        from bmsuploader.ops.stack import aws_problem

        print(f"bmsuploader: error: {aws_problem(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `| head`
        return 0
    except KeyboardInterrupt:  # Ctrl-C in `make run`: the with-blocks above have cleaned up
        print("bmsuploader: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

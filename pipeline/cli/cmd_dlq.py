"""`pipeline dlq list|show|replay|purge`: dead letters, after the cause is fixed (see pipeline/ops/dlq)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import add_config_option, add_timeout_option, csv_list, positive_int

if TYPE_CHECKING:
    from pipeline.ops.config import Settings
    from pipeline.ops.dlq.letters import Letter, LetterFilter
    from pipeline.ops.dlq.replay import Result
    from pipeline.ops.dlq.store import DeadLetterStore
    from pipeline.read.query import CollectionResolver, Db

TIME_HELP = "ISO-8601 (naive = UTC), now, or relative to now (-15m, -1h, -2d)"
# Letters that were not resolved, listed under a replay's summary table (JSON and CSV list every letter).
LISTED_UNRESOLVED = 50


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dlq",
        help="dead letters: list, show, replay through the current configuration, purge",
        description="The messages the worker could not store (errors.dead_letter: the dead_letters "
        "collection and the <topic>.dlq Kafka topic). After fixing the cause (a wider tick.max_price, a "
        "tick.fields mapping, ...) `replay` stores those that decode now under their original _id, exactly "
        "once, then marks them replayed. Bad input exits 2, an unreachable server 1.",
    )
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True

    listing = action.add_parser(
        "list",
        help="counts by topic and error kind, pending and replayed, oldest and newest",
        description="Dead letters in the dead_letters collection, counted per topic and error kind: how "
        "many, how many are still pending (not replayed), the oldest and newest failure time.",
    )
    _filters(listing, default_state="all")
    _output(listing, ("table", "json", "csv"))
    listing.set_defaults(func=dlq_list)

    show = action.add_parser(
        "show",
        help="one dead letter: coordinates, reason, stage, times, key and original bytes (escaped)",
        description="One dead letter of the dead_letters collection, by its Kafka coordinates. The value is "
        "printed as text with control characters and non-UTF-8 bytes escaped (\\x1b, \\xff); --format json "
        "gives the exact bytes as base64.",
    )
    show.add_argument("coordinates", metavar="TOPIC:PARTITION:OFFSET", help="e.g. petr4:0:17 or petr4[0]@17")
    _output(show, ("table", "json"))
    show.set_defaults(func=dlq_show)

    replay = action.add_parser(
        "replay",
        help="store the dead letters that decode now, exactly once, then mark them replayed",
        description="Run pending dead letters through the current configuration (routing, tick.* decoding, "
        "filters: what the worker would do now). Those that decode are stored under their original _id "
        "{topic, partition, offset} with mongo.write_concern, and only then marked replayed (or removed with "
        "--remove); those still failing stay, with the new reason. Run twice, or killed and run again, "
        "each message is stored once (a stored _id holding the same message counts as already stored). "
        "Letters of kind coordinates_reused (another message holds their _id) are reported, never stored.",
    )
    _filters(replay, default_state=None)
    replay.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="TOPIC:PARTITION:OFFSET",
        help="only these letters (repeatable)",
    )
    replay.add_argument("--dry-run", action="store_true", help="decide and report, write nothing")
    replay.add_argument(
        "--remove",
        action="store_true",
        help="delete resolved letters from dead_letters instead of marking them",
    )
    replay.add_argument(
        "--from-topic",
        action="store_true",
        help="read the Kafka dead-letter topics (errors.dead_letter.topic) instead of the collection; a "
        "record cut to fit the topic is replayed from its dead_letters copy, or reported",
    )
    replay.add_argument(
        "--batch-size",
        type=positive_int,
        default=500,
        help="letters stored and marked per step (default 500)",
    )
    add_timeout_option(replay, 30.0, "Kafka (--from-topic)")
    _output(replay, ("table", "json", "csv"))
    replay.set_defaults(func=dlq_replay)

    purge = action.add_parser(
        "purge",
        help="delete the dead letters matching a filter (needs --confirm)",
        description="Delete dead letters from the dead_letters collection (the Kafka dead-letter topic is "
        "not touched). Without --confirm nothing is deleted: it says how many would be, and exits 2.",
    )
    _filters(purge, default_state="all")
    purge.add_argument("--confirm", action="store_true", help="really delete them")
    add_config_option(purge)
    purge.set_defaults(func=dlq_purge)


def _filters(parser: argparse.ArgumentParser, default_state: str | None) -> None:
    parser.add_argument(
        "--topic",
        dest="topics",
        type=csv_list,
        action="extend",
        default=[],
        help="source topic(s), comma-separated",
    )
    parser.add_argument(
        "--kind",
        dest="kinds",
        type=csv_list,
        action="extend",
        default=[],
        help="error kind(s), e.g. out_of_bounds",
    )
    parser.add_argument("--from", dest="start", metavar="TIME", help="failed at or after; " + TIME_HELP)
    parser.add_argument("--to", dest="end", metavar="TIME", help="failed before")
    if default_state is not None:
        parser.add_argument(
            "--state",
            choices=("pending", "replayed", "all"),
            default=default_state,
            help=f"pending (not replayed yet), replayed, or all (default {default_state})",
        )


def _output(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=formats, default="table", help="default: table")
    parser.add_argument("--tz", metavar="ZONE", help="show times in this IANA zone (default: UTC)")
    add_config_option(parser)


def _selection(args: argparse.Namespace, state: str | None = None) -> LetterFilter:
    """The filter from the arguments, validated before any I/O (UsageError/QueryError: exit 2)."""
    from pipeline.cli.errors import UsageError
    from pipeline.ops.dlq.letters import LetterError, LetterFilter, parse_coordinates
    from pipeline.read.query import check_nonempty_range, parse_time

    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    check_nonempty_range(start, end)
    try:
        ids = tuple(parse_coordinates(text) for text in getattr(args, "ids", []))
        return LetterFilter(
            topics=tuple(dict.fromkeys(args.topics)),
            kinds=tuple(dict.fromkeys(args.kinds)),
            start=start,
            end=end,
            state=state or args.state,  # type: ignore[arg-type]
            coordinates=ids,
        )
    except LetterError as exc:
        raise UsageError(str(exc)) from None


def _store(settings: Settings, db: Db) -> DeadLetterStore:
    from pymongo import WriteConcern

    from pipeline.cli.errors import UsageError
    from pipeline.ops.dlq.store import DeadLetterStore

    name = settings.errors.dead_letter.collection
    if name is None:
        raise UsageError("errors.dead_letter.collection is null: there is no dead-letter collection to read")
    wc = settings.mongo.write_concern
    return DeadLetterStore(db, name, WriteConcern(w=wc.w, j=wc.j, wtimeout=wc.wtimeout_ms or None))


def _letters_count(count: int) -> str:
    return f"{count:,} dead letter{'' if count == 1 else 's'}"


# ---- list -------------------------------------------------------------------------------------------------


def dlq_list(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import Column, emit, with_database, zone_label
    from pipeline.read.query import parse_zone

    selection = _selection(args)
    zone = parse_zone(args.tz or "UTC")

    def body(settings: Settings, db: Db, _resolver: CollectionResolver) -> int:
        store = _store(settings, db)
        rows = [vars(row) for row in store.counts(selection)]
        title = f"dead letters in {db.name}.{store.name} ({selection.describe()}), times {zone_label(zone)}"
        columns = [
            Column("topic", "topic"),
            Column("kind", "error kind"),
            Column("letters", "letters", "int"),
            Column("pending", "pending", "int"),
            Column("replayed", "replayed", "int"),
            Column("oldest", "oldest", "time"),
            Column("newest", "newest", "time"),
        ]
        emit(rows, columns, args.format, zone, title, empty="no dead letters")
        if args.format == "table" and rows:
            total = sum(r["letters"] for r in rows)
            pending = sum(r["pending"] for r in rows)
            print(f"{_letters_count(total)}, {pending:,} pending")
        return 0

    return with_database(args, body)


# ---- show -------------------------------------------------------------------------------------------------


def dlq_show(args: argparse.Namespace) -> int:
    import base64

    import orjson

    from pipeline.cli.errors import UsageError
    from pipeline.cli.reading import iso, with_database
    from pipeline.ops.dlq.letters import (
        LetterError,
        letter_from_document,
        parse_coordinates,
        readable,
        section,
    )
    from pipeline.read.query import parse_zone

    try:
        topic, partition, offset = parse_coordinates(args.coordinates)
    except LetterError as exc:
        raise UsageError(str(exc)) from None
    zone = parse_zone(args.tz or "UTC")

    def body(settings: Settings, db: Db, _resolver: CollectionResolver) -> int:
        store = _store(settings, db)
        doc = store.get(topic, partition, offset)
        if doc is None:
            raise UsageError(f"no dead letter {topic}[{partition}]@{offset} in {db.name}.{store.name}")
        try:
            letter = letter_from_document(doc)
        except LetterError as exc:
            raise UsageError(f"{topic}[{partition}]@{offset} is not a valid dead letter: {exc}") from None
        replay = section(doc, "replay")
        first = section(doc, "first_error") or None
        stamp = letter.timestamp_ms

        def when(value: Any) -> str | None:
            return iso(value, zone) if value is not None else None

        from pipeline.core.timefmt import from_epoch_ms

        record: dict[str, Any] = {
            "topic": letter.topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "kind": letter.kind,
            "reason": letter.message,
            "stage": letter.stage,
            "failed_at": when(letter.failed_at),
            "kafka_timestamp": when(from_epoch_ms(stamp)) if stamp is not None else None,
            "key": readable(letter.key, 200) if letter.key is not None else None,
            "value_length": letter.length,
            "value_truncated": letter.truncated,
            "replay_state": replay.get("state", "pending"),
            "replayed_at": when(replay.get("at")),
            "replay_outcome": replay.get("outcome"),
            "replay_attempts": replay.get("attempts"),
            "first_error": f"{first.get('kind')}: {first.get('message')}" if first else None,
        }
        if args.format == "json":
            record["value_base64"] = None if letter.value is None else base64.b64encode(letter.value).decode()
            record["key_base64"] = None if letter.key is None else base64.b64encode(letter.key).decode()
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            return 0
        width = max(len(k) for k in record)
        print(f"dead letter {letter.where} in {db.name}.{store.name}")
        for name, value in record.items():
            if value is not None and value != "":
                print(f"  {name:<{width}}  {readable(str(value).encode(), 400)}")
        print(f"  {'value':<{width}}  {readable(letter.value)}")
        return 0

    return with_database(args, body)


# ---- replay -----------------------------------------------------------------------------------------------


def dlq_replay(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import with_database
    from pipeline.read.query import parse_zone

    selection = _selection(args, state="pending")
    parse_zone(args.tz or "UTC")

    def body(settings: Settings, db: Db, _resolver: CollectionResolver) -> int:
        from pymongo.errors import PyMongoError

        from pipeline.clients.sink import MongoSink
        from pipeline.core.errors import PipelineError, TransientError, describe
        from pipeline.ops.dlq.replay import Replayer, summarize
        from pipeline.ops.redact import redact_text

        store = (
            None
            if args.from_topic and settings.errors.dead_letter.collection is None
            else _store(settings, db)
        )
        sink = MongoSink(settings.mongo, client=db.client)
        replayer = Replayer(settings, sink, store, dry_run=args.dry_run, remove=args.remove)
        letters, notes, rejected = _letters(args, settings, store, selection)
        results: list[Result] = []
        writer = _ResultWriter(args.format)
        try:
            for batch in replayer.replay(letters, args.batch_size):
                batch = [_noted(r, notes) for r in batch]
                results.extend(batch)
                writer.write(batch)
        except (PyMongoError, TransientError) as exc:
            done = summarize(results)
            so_far = ", ".join(f"{n:,} {o}" for o, n in sorted(done.items())) or "nothing"
            reason = redact_text(
                describe(exc),
                [
                    s.get_secret_value()
                    for s in (settings.mongo.password, settings.mongo.uri)
                    if s is not None
                ],
            )
            raise PipelineError(
                f"replay stopped, MongoDB failed: {reason} (so far: {so_far}); run it again: what is stored "
                "is recognised by its _id and stored once"
            ) from None
        writer.close(results, rejected, args.dry_run, selection.describe())
        return 0

    return with_database(args, body)


def _letters(
    args: argparse.Namespace, settings: Settings, store: DeadLetterStore | None, selection: LetterFilter
) -> tuple[Iterator[Letter] | list[Letter], dict[tuple[str, int, int], str], list[str]]:
    """The letters to replay, notes per letter, and the records/documents that are not valid dead letters."""
    from pipeline.ops.dlq.letters import LetterError, letter_from_document

    rejected: list[str] = []
    notes: dict[tuple[str, int, int], str] = {}
    if not args.from_topic:
        assert store is not None

        def documents() -> Iterator[Letter]:
            for doc in store.documents(selection, args.batch_size):
                try:
                    yield letter_from_document(doc)
                except LetterError as exc:
                    rejected.append(f"dead_letters document {str(doc.get('_id'))[:120]}: {exc}")

        return documents(), notes, rejected
    return _topic_letters(args, settings, store, selection, notes, rejected), notes, rejected


def _topic_letters(
    args: argparse.Namespace,
    settings: Settings,
    store: DeadLetterStore | None,
    selection: LetterFilter,
    notes: dict[tuple[str, int, int], str],
    rejected: list[str],
) -> list[Letter]:
    import dataclasses

    from pipeline.cli.errors import UsageError
    from pipeline.core.naming import is_topic_pattern
    from pipeline.ops.dlq.letters import LetterError, letter_from_document
    from pipeline.ops.dlq.topic import original_timestamps, read_dead_letter_topics

    if settings.errors.dead_letter.topic is None:
        raise UsageError(
            "--from-topic: errors.dead_letter.topic is null: there is no dead-letter topic to read"
        )
    sources = list(selection.topics) or [t for t in settings.kafka.topics if not is_topic_pattern(t)]
    if not sources:
        raise UsageError("--from-topic with a pattern subscription: name the source topics with --topic")
    read = read_dead_letter_topics(settings, sources, selection, args.timeout)
    rejected.extend(f"{t}[{p}]@{o}: {why}" for t, p, o, why in read.rejected)
    letters = read.letters
    copies = store.copies([letter.coordinates for letter in letters]) if store is not None else {}
    resolved: list[Letter] = []
    unknown: list[Letter] = []
    for letter in letters:
        copy_doc = copies.get(letter.coordinates)
        copy = None
        if copy_doc is not None:
            try:
                copy = letter_from_document(copy_doc)
            except LetterError:
                copy = None
        if copy is None:
            unknown.append(letter)
            continue
        letter = dataclasses.replace(letter, timestamp_ms=copy.timestamp_ms, timestamp_known=True)
        if letter.truncated and not copy.truncated and copy.value is not None:
            letter = dataclasses.replace(letter, value=copy.value, truncated=False, length=copy.length)
            notes[letter.coordinates] = "the Kafka record is truncated: replayed from its dead_letters copy"
        elif letter.truncated:
            notes[letter.coordinates] = "truncated in Kafka and in dead_letters: not replayable"
        resolved.append(letter)
    if unknown:
        stamps = original_timestamps(settings, [u for u in unknown if not u.truncated], args.timeout)
        for letter in unknown:
            if letter.coordinates in stamps:
                letter = dataclasses.replace(
                    letter, timestamp_ms=stamps[letter.coordinates], timestamp_known=True
                )
            elif letter.truncated:
                notes[letter.coordinates] = "the Kafka record is truncated and there is no dead_letters copy"
            resolved.append(letter)
    return sorted(resolved, key=lambda letter: letter.coordinates)


def _noted(result: Result, notes: dict[tuple[str, int, int], str]) -> Result:
    import dataclasses

    note = notes.get(result.letter.coordinates)
    if not note:
        return result
    detail = f"{result.detail}; {note}" if result.detail else note
    return dataclasses.replace(result, detail=detail)


class _ResultWriter:
    """JSON Lines and CSV: one row per letter, as each batch is done. Table: a summary at the end, with
    the letters that were not resolved."""

    COLUMNS = ("topic", "partition", "offset", "kind", "outcome", "collection", "detail")

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.csv = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(self.COLUMNS)

    def write(self, batch: list[Result]) -> None:
        import orjson

        if self.fmt == "json":
            for result in batch:
                sys.stdout.write(orjson.dumps(result.row()).decode() + "\n")
        elif self.csv is not None:
            for result in batch:
                row = result.row()
                self.csv.writerow([row[c] for c in self.COLUMNS])
        sys.stdout.flush()

    def close(self, results: list[Result], rejected: list[str], dry_run: bool, selection: str) -> None:
        from pipeline.ops.dlq.replay import summarize

        counts = summarize(results)
        order = ("stored", "would_store", "already_stored", "filtered", "failed", "reused", "skipped")
        summary = ", ".join(f"{counts[o]:,} {o}" for o in order if counts.get(o))
        what = "dry run: nothing written; " if dry_run else ""
        line = f"{what}{_letters_count(len(results))} ({selection}): {summary or 'none pending'}"
        if rejected:
            line += f"; {len(rejected):,} not valid dead letters"
        if self.fmt != "table":
            for reason in rejected:
                print(f"not a valid dead letter: {reason}", file=sys.stderr)
            print(line, file=sys.stderr)
            return
        from rich.console import Console
        from rich.table import Table

        from pipeline.cli.reading import stdout_console

        console: Console = stdout_console()
        if results:
            per: dict[tuple[str, str], int] = {}
            for result in results:
                key = (result.letter.topic, result.outcome)
                per[key] = per.get(key, 0) + 1
            table = Table(title=None)
            for column, justify in (("topic", "left"), ("outcome", "left"), ("letters", "right")):
                table.add_column(column, justify=justify)  # type: ignore[arg-type]
            for (topic, outcome), count in sorted(per.items()):
                table.add_row(topic, outcome, f"{count:,}")
            console.print("dry run (nothing written)" if dry_run else "replay", markup=False, style="bold")
            console.print(table)
        unresolved = [
            r for r in results if r.outcome not in ("stored", "would_store", "already_stored", "filtered")
        ]
        for result in unresolved[:LISTED_UNRESOLVED]:
            console.print(
                f"  {result.letter.where}  {result.outcome}: {result.detail}", markup=False, highlight=False
            )
        if len(unresolved) > LISTED_UNRESOLVED:
            console.print(
                f"  ... and {len(unresolved) - LISTED_UNRESOLVED:,} more (--format json lists every letter)",
                markup=False,
            )
        for reason in rejected[:LISTED_UNRESOLVED]:
            console.print(f"  not a valid dead letter: {reason}", markup=False, highlight=False)
        console.print(line, markup=False, highlight=False)


# ---- purge ------------------------------------------------------------------------------------------------


def dlq_purge(args: argparse.Namespace) -> int:
    from pipeline.cli.errors import UsageError
    from pipeline.cli.reading import with_database

    selection = _selection(args)

    def body(settings: Settings, db: Db, _resolver: CollectionResolver) -> int:
        store = _store(settings, db)
        where = f"{db.name}.{store.name}"
        if not args.confirm:
            count = store.count(selection)
            raise UsageError(
                f"not deleting: {_letters_count(count)} in {where} match ({selection.describe()}); "
                "add --confirm to delete them"
            )
        deleted = store.purge(selection)
        print(f"deleted {_letters_count(deleted)} from {where} ({selection.describe()})")
        return 0

    return with_database(args, body)

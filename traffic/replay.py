"""Replay a real event log (CSV) as ``impressions`` and ``actions`` in event-time order.

The mapping from CSV columns to records is a small declarative TOML file (see
``traffic/mappings/``), so a user replays their own log without code:

    [source]      path, header = true | columns = [...], time_format = strftime | unix_s | unix_ms
    [impression]  filter = {col = [values]}, time, request_id (template over columns and
                  {_row}), user, item, slots = [columns], dense = [columns]
    [[actions]]   filter, time, type (literal or template), request_id, user, item

Every row can yield an impression and any number of actions. A row a rule cannot use (an
unparseable time, a missing column) becomes a dead letter with the reason and the raw line;
it is counted, never dropped silently.

    plan = ReplayPlan.from_file("traffic/mappings/talkingdata.toml")   # or a built-in name
    events, dead, counts = plan.events(data_dir)   # sorted by event time, impressions first on ties
    check = dead_letter_check(events, dead, limits, now_ms)   # what the jobs would reject

Before sending, ``streamtrain replay`` runs ``dead_letter_check``: every event through the
validation the streaming jobs apply (``schemas.validation`` with the ``[validation]``
limits), so a log the jobs would mostly reject (say a 1990s log against the default
2000-01-01 floor, ``validation.min_event_time_ms``) is refused up front instead of
filling the dead-letter topic while the trainer idles.
"""

from __future__ import annotations

import csv
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.feature_ids import entity_id, feature_id
from schemas.validation import ValidationLimits, validate_action, validate_impression
from streamtrain.config import ConfigError
from traffic.generator import Event

MAPPINGS_DIR = Path(__file__).parent / "mappings"
REFUSE_FRACTION = 0.5  # replay refuses (without --force) when more of the records would be dead letters
WARN_FRACTION = 0.01   # ... and warns above this


@dataclass(frozen=True)
class Rule:
    time: str
    request_id: str
    user: str
    item: str
    filter: dict[str, tuple[str, ...]] = field(default_factory=dict)
    type: str = ""
    slots: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Rule:
        missing = [k for k in ("time", "request_id", "user", "item") if k not in d]
        if missing:
            raise ConfigError(f"replay mapping [{where}] lacks {', '.join(missing)}")
        unknown = set(d) - {"time", "request_id", "user", "item", "filter", "type", "slots", "dense"}
        if unknown:
            raise ConfigError(f"replay mapping [{where}] has unknown keys {sorted(unknown)}")
        filt = {k: tuple(str(v) for v in vals) for k, vals in d.get("filter", {}).items()}
        return cls(d["time"], d["request_id"], d["user"], d["item"], filt, d.get("type", ""),
                   tuple(d.get("slots", ())), tuple(d.get("dense", ())))

    def matches(self, row: dict[str, str]) -> bool:
        return all(row.get(col) in vals for col, vals in self.filter.items())


@dataclass(frozen=True)
class ReplayPlan:
    path: str
    time_format: str
    impression: Rule
    actions: tuple[Rule, ...]
    header: bool = True
    columns: tuple[str, ...] = ()

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayPlan:
        path = Path(path)
        if not path.exists() and (MAPPINGS_DIR / f"{path}.toml").exists():
            path = MAPPINGS_DIR / f"{path}.toml"  # a built-in mapping by name: "talkingdata"
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read replay mapping {path}: {exc}") from exc
        src = doc.get("source", {})
        if "path" not in src or "impression" not in doc:
            raise ConfigError(f"replay mapping {path} needs [source] path and an [impression] table")
        actions = tuple(Rule.from_dict(a, f"actions.{i}") for i, a in enumerate(doc.get("actions", [])))
        for rule in actions:
            if not rule.type:
                raise ConfigError(f"replay mapping {path}: every [[actions]] needs a type")
        return cls(src["path"], src.get("time_format", "unix_ms"),
                   Rule.from_dict(doc["impression"], "impression"), actions,
                   header=bool(src.get("header", "columns" not in src)),
                   columns=tuple(src.get("columns", ())))

    def csv_path(self, data_dir: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else data_dir / p

    def parse_time(self, text: str) -> int:
        if self.time_format == "unix_s":
            return int(float(text) * 1000)
        if self.time_format == "unix_ms":
            return int(float(text))
        return int(datetime.strptime(text, self.time_format).replace(tzinfo=UTC).timestamp() * 1000)

    def events(self, data_dir: Path, topic_name: str = "csv") -> tuple[list[Event], list[DeadLetter], Counter]:
        """All events of the log sorted by event time, the dead letters, and counts."""
        imp_codec, act_codec = codec_for(Impression), codec_for(Action)
        keyed: list[tuple[int, int, int, Event]] = []
        dead: list[DeadLetter] = []
        stats: Counter[str] = Counter()
        path = self.csv_path(data_dir)
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            names = next(reader) if self.header else list(self.columns)
            for n, values in enumerate(reader):
                row = dict(zip(names, values))
                row["_row"] = str(n)
                for order, rule in enumerate((self.impression, *self.actions)):
                    if not rule.matches(row):
                        continue
                    try:
                        ev = self._event(rule, order == 0, row, imp_codec, act_codec)
                    except (KeyError, ValueError, IndexError) as exc:
                        dead.append(DeadLetter(stage="replay", source_topic=topic_name,
                                               reason=f"row {n}: {type(exc).__name__}: {exc}",
                                               time_ms=0, raw=",".join(values).encode(), offset=n))
                        stats["dead_letters"] += 1
                        continue
                    keyed.append((ev.timestamp_ms, 0 if order == 0 else 1, len(keyed), ev))
                    stats[ev.topic] += 1
        keyed.sort(key=lambda t: t[:3])
        return [k[3] for k in keyed], dead, stats

    def _event(self, rule: Rule, is_impression: bool, row: dict[str, str], imp_codec, act_codec) -> Event:
        when = self.parse_time(row[rule.time])
        request_id = rule.request_id.format(**row)
        user, item = entity_id(row[rule.user]), entity_id(row[rule.item])
        if is_impression:
            ids = [feature_id(s, _as_value(row[col])) for s, col in enumerate(rule.slots)]
            imp = Impression(request_id, user, item, when, list(range(len(ids))), ids,
                             [float(row[c] or 0.0) for c in rule.dense])
            return Event("impressions", request_id.encode(), imp_codec.encode(imp), when, when)
        act = Action(request_id, user, item, rule.type.format(**row), when)
        return Event("actions", request_id.encode(), act_codec.encode(act), when, when)


def _as_value(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class DeadLetterCheck:
    """How many of a log's records would end up in the dead-letter topic: ``mapping`` ones
    the mapping cannot use (rows -> dead letters at once) and the rest by the jobs'
    validation, counted by reason (the text before its first ``:``), with one full reason
    of each as an example."""

    records: int
    mapping: int
    rejected: dict[str, int]
    examples: dict[str, str]

    @property
    def bad(self) -> int:
        return self.mapping + sum(self.rejected.values())

    @property
    def fraction(self) -> float:
        return self.bad / self.records if self.records else 0.0

    def summary(self) -> str:
        """One line: the share, then each reason with its count and an example."""
        parts = ([f"{self.mapping} unusable rows (the mapping)"] if self.mapping else [])
        parts += [f"{n} {reason} (e.g. {self.examples[reason]})"
                  for reason, n in sorted(self.rejected.items(), key=lambda kv: -kv[1])]
        return (f"{self.bad} of {self.records} records ({100 * self.fraction:.1f}%) would go to the "
                f"dead-letter topic: {'; '.join(parts)}")

    def to_dict(self) -> dict:
        return {"records": self.records, "dead_letters": self.bad, "mapping": self.mapping,
                "rejected": dict(self.rejected)}


def dead_letter_check(events: list[Event], dead: list[DeadLetter], limits: ValidationLimits,
                      now_ms: int) -> DeadLetterCheck:
    """Every event through the validation the streaming jobs apply to it (the same
    functions and limits), at processing time ``now_ms``."""
    imp_codec, act_codec = codec_for(Impression), codec_for(Action)
    rejected: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for ev in events:
        if ev.topic == "impressions":
            reason = validate_impression(imp_codec.decode(ev.value), now_ms, limits)
        else:
            reason = validate_action(act_codec.decode(ev.value), now_ms, limits)
        if reason is not None:
            kind = reason.split(":")[0]
            rejected[kind] += 1
            examples.setdefault(kind, reason)
    return DeadLetterCheck(len(events) + len(dead), len(dead), dict(rejected), examples)

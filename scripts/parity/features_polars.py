#!/usr/bin/env python3
"""Computes every feature of features/*.toml for every event of a recorded
stream with polars, independently of the engine's Rust code, for the parity
test engine/features/tests/polars_parity.rs.

It follows the documented semantics (docs/features.md), not the engine's
data structures. Events are taken in arrival order (the file's order, or a
stable sort by event time with --order time). The value at the event that
arrives n-th, with time t, covers the counted events of the same entity that
arrived no later than it (the event itself included) with time in (t - w, t]
(lifetime: (-inf, t]). For each feature this is one polars self-join of the
entity's readers with its counted points, filtered on arrival and time, then
grouped per reader. Ties at equal times are ordered by arrival: `last` is the
latest-arriving of the newest points, `time_since` the newest point other
than the event itself.

Events that arrive later than the allowed lateness are placed inexactly by
the engine (its window may already have dropped points); this script does not
model that and stops if the stream has any. The same goes for every state
bound of [settings]: the script checks that the stream stays within them.

Lines are validated against schemas/event.schema.json (the subset of JSON
Schema that file uses); rejected lines are left out, as the engine sends
them to the dead-letter output. Entities are keyed by their clear values (the
engine keys phones, identity numbers and cards by a keyed hash of the same
value, which groups the events identically).

Anything in a definition this script does not understand stops it with an
error: a feature is never skipped. Output: CSV, `event_id` and one column per
feature in definition order; an empty cell is a missing value, numbers are
written so that they parse back to the same f64.

    PYTHONPATH=~/.cache/riskd/tools/python python3 scripts/parity/features_polars.py \\
        --order time > /tmp/features.csv
"""

import argparse
import calendar
import csv
import datetime
import ipaddress
import json
import re
import struct
import sys
import tomllib
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]

FEATURE_KEYS = {
    "name",
    "description",
    "entity",
    "events",
    "where",
    "agg",
    "of",
    "numerator",
    "denominator",
    "window",
    "unit",
}
SETTINGS_KEYS = {"allowed_lateness", "max_entities", "max_events_per_window", "lifetime_idle_expiry"}
# Defaults of the bounds when no file sets them (docs/features.md).
DEFAULT_MAX_ENTITIES = 10_000_000
DEFAULT_MAX_EVENTS_PER_WINDOW = 100_000
MAX_EVENT_BYTES = 64 * 1024

BASE_ENTITIES = ["user", "device", "ip", "ip24", "phone", "id_number", "bank_card"]
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
NUMERIC_AGGS = {"sum", "min", "max", "mean", "last"}
TIME_AGGS = {"time_since", "first_seen"}
AGGS = NUMERIC_AGGS | TIME_AGGS | {"count", "distinct_count", "ratio"}


class DefinitionError(Exception):
    """A definition or setting this script does not understand."""


class OutOfScope(Exception):
    """A stream the engine would not compute exactly (late events, bounds reached)."""


def duration_ms(text, what):
    m = re.fullmatch(r"\s*([0-9]+)(ms|s|m|h|d|w)\s*", text)
    if not m or int(m.group(1)) == 0:
        raise DefinitionError(f"{what}: `{text}` is not a duration")
    return int(m.group(1)) * DURATION_MS[m.group(2)]


# ---------------------------------------------------------------- events


class Schema:
    """Validates JSON values against the JSON Schema subset used by
    schemas/event.schema.json; any other keyword is an error."""

    ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}

    def __init__(self, doc):
        self.doc = doc

    def field_types(self):
        """Every `event.<name>` of a payload, with its type (num, bool, str)."""
        types = {}
        for name, d in self.doc["$defs"].items():
            if not name.startswith("payload_"):
                continue
            for field, spec in d.get("properties", {}).items():
                spec = self.resolve(spec)
                if spec.get("type") in ("number", "integer"):
                    ty = "num"
                elif spec.get("type") == "boolean":
                    ty = "bool"
                elif spec.get("type") == "string" or "enum" in spec:
                    ty = "str"
                else:
                    raise DefinitionError(f"schema: no type for payload field `{field}`")
                if types.setdefault(field, ty) != ty:
                    raise DefinitionError(f"schema: payload field `{field}` has two types")
        return types

    def event_types(self):
        return list(self.doc["properties"]["event_type"]["enum"])

    def resolve(self, s):
        while "$ref" in s:
            ref = s["$ref"]
            if not ref.startswith("#/$defs/"):
                raise DefinitionError(f"schema: unsupported $ref {ref}")
            s = self.doc["$defs"][ref[len("#/$defs/") :]]
        return s

    def valid(self, v, s=None):
        s = self.doc if s is None else s
        for k, want in s.items():
            if k in self.ANNOTATIONS:
                continue
            ok = getattr(self, "kw_" + k.lstrip("$"), None)
            if ok is None:
                raise DefinitionError(f"schema keyword `{k}` is not supported here")
            if not ok(v, want, s):
                return False
        return True

    @staticmethod
    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def kw_ref(self, v, want, s):
        return self.valid(v, self.resolve({"$ref": want}))

    def kw_type(self, v, want, s):
        return {
            "object": isinstance(v, dict),
            "string": isinstance(v, str),
            "boolean": isinstance(v, bool),
            "number": self.is_num(v),
            "integer": isinstance(v, int) and not isinstance(v, bool),
        }[want]

    def kw_properties(self, v, want, s):
        return not isinstance(v, dict) or all(self.valid(v[k], ps) for k, ps in want.items() if k in v)

    def kw_required(self, v, want, s):
        return not isinstance(v, dict) or all(k in v for k in want)

    def kw_additionalProperties(self, v, want, s):
        if want is not False:
            raise DefinitionError("schema: only additionalProperties: false is supported")
        return not isinstance(v, dict) or all(k in s.get("properties", {}) for k in v)

    @staticmethod
    def same(a, b):
        return type(a) is type(b) and a == b or (Schema.is_num(a) and Schema.is_num(b) and a == b)

    def kw_const(self, v, want, s):
        return self.same(v, want)

    def kw_enum(self, v, want, s):
        return any(self.same(v, w) for w in want)

    def kw_minLength(self, v, want, s):
        return not isinstance(v, str) or len(v) >= want

    def kw_maxLength(self, v, want, s):
        return not isinstance(v, str) or len(v) <= want

    def kw_pattern(self, v, want, s):
        return not isinstance(v, str) or re.search(want, v) is not None

    def kw_minimum(self, v, want, s):
        return not self.is_num(v) or v >= want

    def kw_maximum(self, v, want, s):
        return not self.is_num(v) or v <= want

    def kw_exclusiveMinimum(self, v, want, s):
        return not self.is_num(v) or v > want

    def kw_format(self, v, want, s):
        if not isinstance(v, str):
            return True
        if want == "date-time":
            return time_ms(v) is not None
        try:
            addr = ipaddress.ip_address(v)
        except ValueError:
            return False
        return addr.version == {"ipv4": 4, "ipv6": 6}[want]

    def kw_allOf(self, v, want, s):
        return all(self.valid(v, x) for x in want)

    def kw_anyOf(self, v, want, s):
        return any(self.valid(v, x) for x in want)

    def kw_if(self, v, want, s):
        return not self.valid(v, want) or self.valid(v, s.get("then", {}))

    def kw_then(self, v, want, s):
        return True  # applied by `if`


TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def time_ms(text):
    """RFC 3339 to milliseconds since the epoch, fractions below a
    millisecond dropped (rounded down, as the engine keeps them)."""
    m = TIME_RE.fullmatch(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    try:
        datetime.datetime(y, mo, d, h, mi, s)
    except ValueError:
        return None
    secs = calendar.timegm((y, mo, d, h, mi, s))
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            return None
        secs -= (1 if m.group(9) == "+" else -1) * (oh * 3600 + om * 60)
    frac = (m.group(7) or "").ljust(3, "0")[:3]
    return secs * 1000 + int(frac)


def load_events(path, schema):
    """Valid events in file order, as dicts with `t` (ms) added; and the
    number of rejected lines."""
    events, rejected = [], 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                if len(line) > MAX_EVENT_BYTES:
                    raise ValueError("oversize")
                ev = json.loads(line.decode("utf-8"))
            except ValueError:
                rejected += 1
                continue
            if not schema.valid(ev):
                rejected += 1
                continue
            ev["t"] = time_ms(ev["event_time"])
            events.append(ev)
    return events, rejected


# ---------------------------------------------------------------- definitions


class Field:
    """A readable event field: `get(ev)` gives (type, value) or None when missing."""

    def __init__(self, name, schema_types):
        self.name = name
        scope, _, attr = name.partition(".")
        if name == "event.type":
            self.ty, self.get = "str", lambda ev: ("str", ev["event_type"])
        elif name == "event.hour_of_day":
            self.ty, self.get = "num", lambda ev: ("num", float(ev["t"] // 3_600_000 % 24))
        elif name == "event.day_of_week":
            # 1970-01-01 was a Thursday (3, with Monday 0).
            self.ty, self.get = "num", lambda ev: ("num", float((ev["t"] // 86_400_000 + 3) % 7))
        elif scope == "entity" and attr in ("user_id", "device_id"):
            self.ty = "str"
            self.get = lambda ev: ("str", ev["entities"][attr]) if attr in ev["entities"] else None
        elif name == "entity.ip":
            self.ty = "ip"
            self.get = lambda ev: ("ip", ipaddress.ip_address(ev["entities"]["ip"])) if "ip" in ev["entities"] else None
        elif scope == "event" and attr in schema_types:
            self.ty = schema_types[attr]

            def get(ev):
                v = ev["payload"].get(attr)
                if v is None:
                    return None
                return (self.ty, float(v) if self.ty == "num" else v)

            self.get = get
        else:
            raise DefinitionError(f"unknown event field `{name}`")

    def number(self, ev):
        """The numeric reading: numbers, booleans as 0/1, anything else missing."""
        v = self.get(ev)
        if v is None or v[0] not in ("num", "bool"):
            return None
        return float(v[1])

    def distinct(self, ev):
        """A text that is equal for equal values (numbers by their f64 bits)."""
        v = self.get(ev)
        if v is None:
            return None
        ty, x = v
        if ty == "num":
            return "n" + struct.pack("<d", x).hex()
        if ty == "bool":
            return "b" + str(int(x))
        return ty[0] + str(x)


def parse_entity(text):
    if text == "event":
        return ["event"]
    parts = [p.strip() for p in text.split("+")] if "+" in text else [text]
    if any(p not in BASE_ENTITIES for p in parts) or len(set(parts)) != len(parts):
        raise DefinitionError(f"unknown entity `{text}`")
    return sorted(parts, key=BASE_ENTITIES.index)


def entity_part(kind, ev):
    e = ev["entities"]
    if kind in ("user", "device", "phone", "id_number", "bank_card"):
        key = {"user": "user_id", "device": "device_id"}.get(kind, kind)
        return e.get(key)
    if "ip" not in e:
        return None
    addr = ipaddress.ip_address(e["ip"])
    if kind == "ip":
        return str(addr)
    return str(ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 64}", strict=False))


def entity_key(parts, ev):
    keys = [entity_part(p, ev) for p in parts]
    return None if any(k is None for k in keys) else "|".join(keys)


class Feature:
    def __init__(self, raw, earlier, schema_types, event_types, origin):
        unknown = set(raw) - FEATURE_KEYS
        if unknown:
            raise DefinitionError(f"{origin}: unknown keys {sorted(unknown)}")
        if not {"name", "entity", "agg"} <= set(raw):
            raise DefinitionError(f"{origin}: a feature needs name, entity and agg")
        self.name = raw["name"]
        where = f"{origin}: feature `{self.name}`"
        self.agg = raw["agg"]
        if self.agg not in AGGS:
            raise DefinitionError(f"{where}: unknown aggregation `{self.agg}`")
        self.entity = parse_entity(raw["entity"])
        if (self.entity == ["event"]) != (self.agg == "ratio"):
            raise DefinitionError(f"{where}: entity `event` goes with agg `ratio` only")
        self.events = raw.get("events")
        if self.events is not None and any(e not in event_types for e in self.events):
            raise DefinitionError(f"{where}: unknown event type in {self.events}")
        self.filters = []
        for fname, want in raw.get("where", {}).items():
            f = Field(fname, schema_types)
            wants = {bool: "bool", int: "num", float: "num", str: "str"}.get(type(want))
            if wants != f.ty:
                raise DefinitionError(f"{where}: `where` compares `{fname}` ({f.ty}) with {want!r}")
            self.filters.append((f, float(want) if wants == "num" else want))
        self.of = None
        if self.agg in NUMERIC_AGGS or self.agg == "distinct_count":
            if "of" not in raw:
                raise DefinitionError(f"{where}: `{self.agg}` needs `of`")
            self.of = Field(raw["of"], schema_types)
            if self.agg in NUMERIC_AGGS and self.of.ty not in ("num", "bool"):
                # The engine reads a non-numeric `of` as missing on every event.
                raise DefinitionError(f"{where}: `{self.agg}` of a {self.of.ty} field is not modelled")
        elif "of" in raw:
            raise DefinitionError(f"{where}: `{self.agg}` takes no `of`")
        self.unit_ms = None
        if self.agg in TIME_AGGS:
            unit = raw.get("unit", "s")
            if unit not in UNITS_MS:
                raise DefinitionError(f"{where}: unknown unit `{unit}`")
            self.unit_ms = UNITS_MS[unit]
        elif "unit" in raw:
            raise DefinitionError(f"{where}: `unit` applies only to time_since and first_seen")
        self.operands = None
        if self.agg == "ratio":
            if "window" in raw:
                raise DefinitionError(f"{where}: a ratio takes no window")
            self.operands = []
            for side in ("numerator", "denominator"):
                name = raw.get(side)
                if name is None:
                    raise DefinitionError(f"{where}: ratio needs `{side}`")
                # An earlier feature's name wins over a field's, as in the engine.
                self.operands.append(("feature", name) if name in earlier else ("field", Field(name, schema_types)))
            self.window_ms = None
        else:
            if "numerator" in raw or "denominator" in raw:
                raise DefinitionError(f"{where}: only a ratio takes numerator and denominator")
            if "window" not in raw:
                raise DefinitionError(f"{where}: missing `window`")
            w = raw["window"]
            self.window_ms = None if w == "lifetime" else duration_ms(w, where)

    def counts(self, ev):
        """Whether the event is counted, and the value it contributes."""
        if self.events is not None and ev["event_type"] not in self.events:
            return False, None
        for f, want in self.filters:
            v = f.get(ev)
            if v is None or v[1] != want:
                return False, None
        if self.agg in NUMERIC_AGGS:
            x = self.of.number(ev)
            return x is not None, x
        if self.agg == "distinct_count":
            x = self.of.distinct(ev)
            return x is not None, x
        return True, None


def load_features(features_dir, schema):
    schema_types = schema.field_types()
    event_types = schema.event_types()
    files = sorted(Path(features_dir).glob("*.toml"))
    if not files:
        raise DefinitionError(f"no feature files in {features_dir}")
    lateness, max_entities, max_points, idle_expiry = 0, DEFAULT_MAX_ENTITIES, DEFAULT_MAX_EVENTS_PER_WINDOW, None
    feats = {}
    for path in files:
        doc = tomllib.loads(path.read_text())
        unknown = set(doc) - {"settings", "feature"}
        if unknown:
            raise DefinitionError(f"{path.name}: unknown tables {sorted(unknown)}")
        s = doc.get("settings", {})
        if set(s) - SETTINGS_KEYS:
            raise DefinitionError(f"{path.name}: unknown settings {sorted(set(s) - SETTINGS_KEYS)}")
        # Several files may set them: the largest lateness and the tightest bounds apply.
        if "allowed_lateness" in s:
            lateness = max(lateness, duration_ms(s["allowed_lateness"], "allowed_lateness"))
        max_entities = min(max_entities, s.get("max_entities", max_entities))
        max_points = min(max_points, s.get("max_events_per_window", max_points))
        if "lifetime_idle_expiry" in s:
            e = duration_ms(s["lifetime_idle_expiry"], "lifetime_idle_expiry")
            idle_expiry = e if idle_expiry is None else min(idle_expiry, e)
        for raw in doc.get("feature", []):
            f = Feature(raw, feats, schema_types, event_types, path.name)
            if f.name in feats:
                raise DefinitionError(f"feature `{f.name}` is defined twice")
            feats[f.name] = f
    settings = {
        "allowed_lateness_ms": lateness,
        "max_entities": max_entities,
        "max_events_per_window": max_points,
        "lifetime_idle_expiry_ms": idle_expiry,
    }
    return settings, list(feats.values())


# ---------------------------------------------------------------- computation


def check_in_scope(settings, feats, events):
    """Stops unless the engine computes this stream exactly: no event later
    than the allowed lateness, no state bound reached."""
    newest = None
    for ev in events:
        if newest is not None and ev["t"] < newest - settings["allowed_lateness_ms"]:
            raise OutOfScope(f"{ev['event_id']} arrives later than the allowed lateness; not modelled")
        newest = ev["t"] if newest is None else max(newest, ev["t"])
    if len(events) > settings["max_events_per_window"]:
        raise OutOfScope("more events than max_events_per_window: dropped points are not modelled")
    span = max(e["t"] for e in events) - min(e["t"] for e in events) if events else 0
    expiry = settings["lifetime_idle_expiry_ms"]
    if expiry is not None and span >= expiry:
        raise OutOfScope("the stream spans lifetime_idle_expiry: idle expiry is not modelled")
    for parts in {tuple(f.entity) for f in feats if f.entity != ["event"]}:
        n = len({entity_key(parts, ev) for ev in events} - {None})
        if n > settings["max_entities"]:
            raise OutOfScope(f"{'+'.join(parts)}: {n} entities, over max_entities: eviction is not modelled")


def window_feature(f, events):
    """One windowed feature for every event: a polars Series (null = missing)."""
    counted = [f.counts(ev) for ev in events]
    is_distinct = f.agg == "distinct_count"
    df = pl.DataFrame(
        {
            "pos": range(len(events)),
            "t": [ev["t"] for ev in events],
            "key": [entity_key(f.entity, ev) for ev in events],
            "counted": [c for c, _ in counted],
            "val": [v for _, v in counted],
        },
        schema={"pos": pl.Int64, "t": pl.Int64, "key": pl.String, "counted": pl.Boolean,
                "val": pl.String if is_distinct else pl.Float64},
    )
    readers = df.filter(pl.col("key").is_not_null()).select("pos", "t", "key")
    points = df.filter(pl.col("counted") & pl.col("key").is_not_null()).select(
        "key", pl.col("pos").alias("pos_p"), pl.col("t").alias("t_p"), "val"
    )
    # Seen by the reader: arrived no later than it, time in (t - w, t].
    seen = (pl.col("pos_p") <= pl.col("pos")) & (pl.col("t_p") <= pl.col("t"))
    if f.window_ms is not None:
        seen = seen & (pl.col("t_p") > pl.col("t") - f.window_ms)
    pairs = readers.join(points, on="key", how="inner").filter(seen)

    def age(t_p):
        # In milliseconds; divided by the unit below.
        return pl.col("t").first() - t_p

    aggs = {
        "count": lambda: (pl.len().cast(pl.Float64), 0.0),
        "sum": lambda: (pl.col("val").sum(), 0.0),
        "mean": lambda: (pl.col("val").mean(), None),
        "min": lambda: (pl.col("val").min(), None),
        "max": lambda: (pl.col("val").max(), None),
        # Newest point; among equal times the latest to arrive.
        "last": lambda: (pl.col("val").sort_by(["t_p", "pos_p"]).last(), None),
        "distinct_count": lambda: (pl.col("val").n_unique().cast(pl.Float64), 0.0),
        # Newest point other than the reading event itself.
        "time_since": lambda: (age(pl.col("t_p").filter(pl.col("pos_p") != pl.col("pos")).max()), None),
        "first_seen": lambda: (age(pl.col("t_p").min()), None),
    }
    expr, empty = aggs[f.agg]()
    per_reader = pairs.group_by("pos").agg(expr.alias("v"))
    if f.unit_ms is not None:
        # Polars divides by a scalar (a literal too) by multiplying with its
        # reciprocal, which is often one ulp away from the quotient the
        # engine computes; dividing by a column of the unit is a true division.
        unit = pl.Series("unit", [float(f.unit_ms)] * per_reader.height, dtype=pl.Float64)
        per_reader = per_reader.with_columns(unit).select("pos", pl.col("v").cast(pl.Float64) / pl.col("unit"))
    # A reader whose window holds no point reads the empty value; an event
    # without the entity reads missing.
    out = (
        df.select("pos", "key")
        .join(per_reader, on="pos", how="left")
        .sort("pos")
        .select(
            pl.when(pl.col("key").is_null())
            .then(None)
            .otherwise(pl.col("v").fill_null(empty) if empty is not None else pl.col("v"))
            .cast(pl.Float64)
        )
    )
    return out.to_series()


def ratio_feature(f, events, done):
    def operand(o):
        kind, what = o
        if kind == "feature":
            return done[what]
        return pl.Series([what.number(ev) for ev in events], dtype=pl.Float64)

    df = pl.DataFrame({"n": operand(f.operands[0]), "d": operand(f.operands[1])})
    missing = pl.col("n").is_null() | pl.col("d").is_null() | (pl.col("d") == 0.0)
    return df.select(pl.when(missing).then(None).otherwise(pl.col("n") / pl.col("d"))).to_series()


def compute(feats, events):
    done = {}
    for f in feats:
        done[f.name] = ratio_feature(f, events, done) if f.agg == "ratio" else window_feature(f, events)
    return pl.DataFrame({"event_id": [ev["event_id"] for ev in events], **done})


def write_csv(df, out):
    w = csv.writer(out, lineterminator="\n")
    w.writerow(df.columns)
    for row in df.iter_rows():
        # repr() of a float is the shortest text that parses back to the same bits.
        w.writerow([row[0]] + ["" if x is None else repr(x) for x in row[1:]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default=ROOT / "features")
    ap.add_argument("--events", default=ROOT / "replay-data" / "events.jsonl")
    ap.add_argument("--schema", default=ROOT / "schemas" / "event.schema.json")
    ap.add_argument("--order", choices=["file", "time"], default="file")
    ap.add_argument("--out", help="CSV file (default: standard output)")
    args = ap.parse_args()

    schema = Schema(json.loads(Path(args.schema).read_text()))
    settings, feats = load_features(args.features, schema)
    events, rejected = load_events(args.events, schema)
    if args.order == "time":
        events.sort(key=lambda ev: ev["t"])  # stable: equal times keep file order
    check_in_scope(settings, feats, events)
    df = compute(feats, events)
    if args.out:
        with open(args.out, "w", newline="") as out:
            write_csv(df, out)
    else:
        write_csv(df, sys.stdout)
    print(
        f"features_polars: {len(events)} events ({rejected} lines rejected), {len(feats)} features, "
        f"{args.order} order, polars {pl.__version__}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    try:
        main()
    except (DefinitionError, OutOfScope) as e:
        sys.exit(f"features_polars: {e}")

"""A synthetic interaction log of any size, deterministic by seed, in daily drops.

    python -m libs.synthetic --events 1000000 --out data/synthetic [--days 365] [--seed 0]

Writes ``<out>/interactions/<YYYY-MM-DD>.csv`` (one drop per day, header
``user_id,item_id,timestamp,event_type,value``, epoch seconds), ``<out>/items.csv`` (item_id, title,
genres ``|``-separated, year) and ``<out>/users.csv`` (user_id, signup_date, country), read by the
``synthetic`` dataset adapter (``conf/datasets/synthetic.yaml``).

What makes it realistic enough to test a recommender pipeline at scale:

* power-law item popularity (Zipf, ``--zipf``) inside each genre; a back catalog at the start and
  new items released over the whole span (an event never precedes its item's release);
* users arriving over the span (new users every day), log-normal activity, sessions of
  exponentially spaced events, a taste over genres that drifts from one mixture to another over
  the user's life, and a sequential pattern (an item often follows its predecessor in its genre's
  popularity order: what sequence models can learn);
* event types click / view / rating (value 1-5) / add_to_cart / purchase;
* exactly ``--events`` distinct valid events, plus ``--duplicate-ratio`` exact duplicate lines,
  ``--bad-ratio`` bad lines (malformed, no user, unknown item, bad timestamp, unknown event type,
  bad value) and ``--late-ratio`` events delivered in the next day's drop.

Memory grows with ``--events`` (about 60 bytes per event: 3 GB at 50M); the work is vectorized
numpy (about 1M events/s per core).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
WORDS = ("night", "river", "city", "last", "first", "secret", "dark", "blue", "king", "summer",
         "lost", "house", "road", "star", "heart", "storm", "silver", "fire", "winter", "dream",
         "garden", "ghost", "island", "journey", "legend", "moon", "ocean", "shadow", "stone", "wolf",
         "empire", "machine", "song", "time", "voice", "wild", "world", "golden", "broken", "hidden")
COUNTRIES = ("us", "gb", "de", "fr", "br", "in", "jp", "es", "it", "ca")
EVENT_TYPES = ("click", "view", "rating", "add_to_cart", "purchase")
EVENT_TYPE_SHARES = (0.60, 0.25, 0.10, 0.03, 0.02)
HEADER = "user_id,item_id,timestamp,event_type,value"
BACK_CATALOG_SHARE = 0.4      # items released before the span starts
FOUNDING_USERS_SHARE = 0.3    # users active from the first day
MEAN_SESSION_EVENTS = 6.0
MEAN_EVENT_GAP_S = 90.0       # within a session
THEME_STICKINESS = 0.75       # share of a session's events in its theme genre
SEQUEL_SHARE = 0.3            # share of events that follow their predecessor's successor item
DAY_S = 86400


@dataclass
class LogSummary:
    events: int                 # distinct valid events
    duplicate_lines: int
    bad_lines: int
    late_events: int            # delivered in the next day's drop
    users: int
    items: int
    first_day: str
    last_day: str
    drops: int                  # interaction files written
    seed: int


def default_users(events: int) -> int:
    return max(50, events // 100)


def default_items(events: int) -> int:
    return max(50, int(4 * events ** 0.5))


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(numbers).cast(pa.string()), "")


def _sample_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``cdf`` (rows: cumulative probabilities)."""
    return np.minimum((cdf < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


class _Catalog:
    def __init__(self, rng: np.random.Generator, n_items: int, days: int, first_day: dt.date, zipf: float):
        genre_weights = rng.dirichlet(np.full(len(GENRES), 2.0))
        self.genre = rng.choice(len(GENRES), n_items, p=genre_weights)
        back = rng.random(n_items) < BACK_CATALOG_SHARE
        self.release_s = np.where(back, 0, rng.integers(0, days * DAY_S, n_items)).astype(np.int64)
        # per genre: items in popularity order (rank 0 most popular, always back catalog)
        self.by_genre, self.cdf, self.successor = [], [], np.arange(n_items)
        self.rank = np.zeros(n_items, np.int64)
        for g in range(len(GENRES)):
            members = rng.permutation(np.flatnonzero(self.genre == g))
            if len(members) == 0:
                members = np.array([rng.integers(n_items)])   # a genre without items borrows one
            self.release_s[members[:max(1, len(members) // 10)]] = 0
            weights = 1.0 / np.arange(1, len(members) + 1) ** zipf
            self.by_genre.append(members)
            self.cdf.append(np.cumsum(weights) / weights.sum())
            self.rank[members] = np.arange(len(members))
            self.successor[members[:-1]] = members[1:]
        start_year = first_day.year
        release_year = np.array([(first_day + dt.timedelta(seconds=int(s))).year for s in self.release_s])
        self.year = np.where(self.release_s == 0, rng.integers(1950, start_year + 1, n_items), release_year)
        self.extra_genres = [rng.choice(len(GENRES), k, replace=False) for k in
                             rng.choice(3, n_items, p=[0.5, 0.3, 0.2])]
        self.words = rng.integers(0, len(WORDS), (n_items, 2))
        self.sequel = rng.integers(0, 4, n_items)   # "2", "3" on some titles

    def pick(self, rng: np.random.Generator, genre: np.ndarray) -> np.ndarray:
        items = np.empty(len(genre), np.int64)
        u = rng.random(len(genre))
        for g, members in enumerate(self.by_genre):
            rows = np.flatnonzero(genre == g)
            items[rows] = members[np.searchsorted(self.cdf[g], u[rows])]
        return items

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as out:
            out.write("item_id,title,genres,year\n")
            for i in range(len(self.genre)):
                genres = [GENRES[self.genre[i]]] + [GENRES[g] for g in self.extra_genres[i] if g != self.genre[i]]
                title = f"{WORDS[self.words[i, 0]].title()} {WORDS[self.words[i, 1]].title()}"
                if self.sequel[i] >= 2:
                    title += f" {self.sequel[i]}"
                out.write(f"i{i},{title} ({self.year[i]}),{'|'.join(genres)},{self.year[i]}\n")


def generate(out: str, events: int, users: Optional[int] = None, items: Optional[int] = None,
             days: int = 365, last_day: dt.date = dt.date(2024, 1, 15), seed: int = 0, zipf: float = 0.9,
             duplicate_ratio: float = 0.01, bad_ratio: float = 0.005, late_ratio: float = 0.02) -> LogSummary:
    """Write the log described in the module docstring under ``out``; returns what was written."""
    if events < 1 or days < 1:
        raise ValueError("events and days must be positive")
    rng = np.random.default_rng(seed)
    n_users, n_items = users or default_users(events), items or default_items(events)
    first_day = last_day - dt.timedelta(days=days - 1)
    span_s = days * DAY_S
    catalog = _Catalog(rng, n_items, days, first_day, zipf)

    # users: arrival, activity, two taste mixtures over genres
    founding = rng.random(n_users) < FOUNDING_USERS_SHARE
    arrival_s = np.where(founding, 0, rng.integers(0, span_s, n_users)).astype(np.int64)
    activity = rng.lognormal(0.0, 1.0, n_users) * (span_s - arrival_s) / span_s
    taste_from = rng.dirichlet(np.full(len(GENRES), 0.3), n_users)
    taste_to = rng.dirichlet(np.full(len(GENRES), 0.3), n_users)

    # sessions: enough for ~10% more events than asked, trimmed to exactly `events` distinct ones below
    target = int(events * 1.1) + 10
    per_user = rng.poisson(activity / activity.sum() * target / MEAN_SESSION_EVENTS)
    session_user = np.repeat(np.arange(n_users), per_user)
    life = span_s - arrival_s[session_user]
    session_start = arrival_s[session_user] + (rng.random(len(session_user)) * life).astype(np.int64)
    lengths = rng.geometric(1.0 / MEAN_SESSION_EVENTS, len(session_user))
    event_session = np.repeat(np.arange(len(session_user)), lengths)
    first_of_session = np.r_[0, np.cumsum(lengths)[:-1]]
    gaps = rng.exponential(MEAN_EVENT_GAP_S, len(event_session)).astype(np.int64) + 1
    gaps[first_of_session] = 0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first_of_session], lengths)
    ts = session_start[event_session] + offset
    user = session_user[event_session]

    # genres: a theme per session from the drifted taste, most events stay on it
    genre = np.empty(len(ts), np.int64)
    chunk = 1_000_000
    for lo in range(0, len(session_user), chunk):
        rows = slice(lo, lo + chunk)
        su = session_user[rows]
        drift = ((session_start[rows] - arrival_s[su]) / np.maximum(span_s - arrival_s[su], 1))[:, None]
        cdf = np.cumsum((1 - drift) * taste_from[su] + drift * taste_to[su], axis=1)
        theme = _sample_rows(cdf, rng.random(len(su)))
        in_chunk = (event_session >= lo) & (event_session < lo + chunk)
        local = event_session[in_chunk] - lo
        other = _sample_rows(cdf[local], rng.random(len(local)))
        genre[in_chunk] = np.where(rng.random(len(local)) < THEME_STICKINESS, theme[local], other)
    item = catalog.pick(rng, genre)
    follows = rng.random(len(item)) < SEQUEL_SHARE
    follows[first_of_session] = False
    item[follows] = catalog.successor[item[np.flatnonzero(follows) - 1]]
    for _ in range(3):   # an item is never seen before its release: draw again, then its genre's top item
        early = np.flatnonzero(catalog.release_s[item] > ts)
        if len(early) == 0:
            break
        item[early] = catalog.pick(rng, catalog.genre[item[early]])
    early = np.flatnonzero(catalog.release_s[item] > ts)
    item[early] = np.array([catalog.by_genre[g][0] for g in catalog.genre[item[early]]], np.int64)

    # exactly `events` distinct valid events (same user, item and second counts once), inside the span
    ts = np.minimum(ts, span_s - 1)
    key = (user.astype(np.int64) * n_items + item) * span_s + ts
    _, first = np.unique(key, return_index=True)
    if len(first) < events:
        raise ValueError(f"only {len(first):,} distinct events for {events:,} asked: give more users or items")
    keep = np.sort(rng.choice(first, events, replace=False))
    user, item, ts = user[keep], item[keep], ts[keep]
    order = np.argsort(ts, kind="stable")
    user, item, ts = user[order], item[order], ts[order]
    etype = rng.choice(len(EVENT_TYPES), events, p=EVENT_TYPE_SHARES)
    value = np.where(etype == EVENT_TYPES.index("rating"), rng.integers(1, 6, events), 0)

    # delivery: the drop of the event's day, or the next day's (late); duplicates in the same drop
    day = ts // DAY_S
    late = (rng.random(events) < late_ratio) & (day < days - 1)
    drop = day + late
    n_dup = int(events * duplicate_ratio)
    dup = rng.choice(events, n_dup, replace=False)
    rows = np.r_[np.arange(events), dup]
    epoch = int(dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=dt.timezone.utc).timestamp())
    lines = pc.binary_join_element_wise(
        _ids("u", user[rows]), _ids("i", item[rows]), pa.array(ts[rows] + epoch).cast(pa.string()),
        pa.array(np.array(EVENT_TYPES, dtype=object)[etype[rows]]),
        pa.array(np.where(value[rows] > 0, value[rows].astype(str), "")), ",")
    line_drop = drop[rows]
    n_bad = int(events * bad_ratio)
    bad_rows = rng.choice(events, n_bad)
    bad_lines = [_corrupt(i % 6, int(user[r]), int(item[r]), int(ts[r] + epoch)) for i, r in enumerate(bad_rows)]
    bad = pc.binary_join_element_wise(pa.array(bad_lines, pa.string()), pa.scalar(""), "\n")
    lines = pc.binary_join_element_wise(lines, pa.scalar(""), "\n")   # every line ends with its newline
    lines = pa.chunked_array([lines, bad]).combine_chunks()
    line_drop = np.r_[line_drop, drop[bad_rows]]

    folder = os.path.join(out, "interactions")
    os.makedirs(folder, exist_ok=True)
    order = np.argsort(line_drop, kind="stable")
    bounds = np.searchsorted(line_drop[order], np.arange(days + 1))
    drops = 0
    for d in range(days):
        if bounds[d] == bounds[d + 1]:
            continue
        chunk_lines = lines.take(pa.array(order[bounds[d]:bounds[d + 1]]))
        name = (first_day + dt.timedelta(days=d)).isoformat()
        with open(os.path.join(folder, f"{name}.csv"), "w", encoding="utf-8") as f:
            f.write(HEADER + "\n")
            f.write(_concatenated(chunk_lines))
        drops += 1
    catalog.write(os.path.join(out, "items.csv"))
    with open(os.path.join(out, "users.csv"), "w", encoding="utf-8") as f:
        f.write("user_id,signup_date,country\n")
        for u in range(n_users):
            signup = first_day + dt.timedelta(seconds=int(arrival_s[u]))
            f.write(f"u{u},{signup.isoformat()},{COUNTRIES[u % len(COUNTRIES)]}\n")
    summary = LogSummary(events, n_dup, n_bad, int(late.sum()), n_users, n_items, first_day.isoformat(),
                         last_day.isoformat(), drops, seed)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(asdict(summary), f, indent=1)
    return summary


def _concatenated(lines: pa.Array) -> str:
    """The values of a string array back to back (its data buffer), without a Python object per line."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]].decode("utf-8")


def _corrupt(kind: int, user: int, item: int, ts: int) -> str:
    """A bad line of one of six kinds (what ingest quarantines, each with its own reason)."""
    return (f"u{user},i{item},{ts}",                       # malformed_line: a field short
            f",i{item},{ts},click,",                        # missing_user_id
            f"u{user},i_unknown_{item},{ts},click,",        # item_not_in_catalog
            f"u{user},i{item},yesterday,click,",            # unparseable_timestamp
            f"u{user},i{item},{ts},hover,",                 # unknown_event_type
            f"u{user},i{item},{ts},rating,five")[kind]      # unparseable_value


def main(argv=None) -> LogSummary:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True, help="distinct valid events")
    parser.add_argument("--out", required=True, help="folder to write (interactions/, items.csv, users.csv)")
    parser.add_argument("--users", type=int, help="default: events / 100")
    parser.add_argument("--items", type=int, help="default: 4 * sqrt(events)")
    parser.add_argument("--days", type=int, default=365, help="span of the log, ending on --last-day")
    parser.add_argument("--last-day", type=dt.date.fromisoformat, default=dt.date(2024, 1, 15))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zipf", type=float, default=0.9, help="popularity exponent inside a genre")
    parser.add_argument("--duplicate-ratio", type=float, default=0.01)
    parser.add_argument("--bad-ratio", type=float, default=0.005)
    parser.add_argument("--late-ratio", type=float, default=0.02)
    args = parser.parse_args(argv)
    summary = generate(args.out, args.events, args.users, args.items, args.days, args.last_day, args.seed,
                       args.zipf, args.duplicate_ratio, args.bad_ratio, args.late_ratio)
    print(json.dumps(asdict(summary)))
    return summary


if __name__ == "__main__":
    main()

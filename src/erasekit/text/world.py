"""The text world: a synthetic corpus with ground truth for language-model unlearning (MUSE-style splits).

Fictional entities (the toy world's artists and characters plus generated names) each hold five facts — birthplace,
birth year, profession, best-known work, teacher (a relation to another entity). Every fact is mentioned exactly
`frequency` times in the "news" documents (statements in several templates and question/answer lines), with the
frequency set per entity from `FREQUENCY_TIERS`, so QA accuracy can be read against training frequency. Fictional
"books" are long passages from a grammar, repeated `book_repeats` times so a small model memorises them verbatim.

Splits (MUSE, Shi et al. 2024, arXiv:2407.06460): `forget` (news of the forget entities + the forget books), `retain`
(everything else that is trained on) and `holdout` (books and entities never trained on; PrivLeak's non-members).
The retrained reference is trained on `retain` only. Everything is a deterministic function of the seed and the
config; `manifest()` records counts and a sha256 of the corpus.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError, UnknownNameError
from ..io import atomic_write_text

FORMAT = "erasekit.textworld/1"
# the toy world's fictional artists and characters (copied as strings: the core never imports the toy-world plugin)
TOY_NAMES = ("Alva Renn", "Boris Kell", "Cora Voss", "Dmitri Hale", "Esme Quist", "Felix Orme", "Greta Lund",
             "Hugo Brandt", "Ines Moro", "Jonas Pike", "Kai Tamsin", "Lena Stroud", "Milo Varga", "Nadia Frey",
             "Oskar Wende", "Pia Lorne", "Quin Harrow", "Rhea Solis", "Zorbo", "Mossy", "Snowby", "Kiko", "Gloop",
             "Buzzy")
FIRST = ("Ada", "Bram", "Cleo", "Dario", "Elin", "Fenn", "Gala", "Hart", "Ivo", "Juna", "Kestrel", "Lio", "Maren",
         "Nils", "Orla", "Pavo", "Runa", "Sten", "Tova", "Ulf", "Vera", "Wim", "Yara", "Zeno")
LAST = ("Ashgrove", "Bellwick", "Corrin", "Dunmore", "Elderby", "Farrow", "Galloway", "Hollis", "Ingram", "Jessop",
        "Kilner", "Lyle", "Marsh", "Norrow", "Oakes", "Pell", "Quarry", "Rook", "Selby", "Thorne")
PLACES = ("Velmora", "Ostrand", "Kessary", "Brightwater", "Dunhollow", "Marrowgate", "Sablecourt", "Tiverfold",
          "Quillon", "Ashenvale", "Pellmoor", "Caldris", "Ferrowick", "Lunmere", "Orvanne", "Greystock")
PROFESSIONS = ("painter", "sculptor", "poet", "composer", "weaver", "cartographer", "glassblower", "astronomer",
               "potter", "engraver")
ADJ = ("silent", "amber", "hollow", "crimson", "distant", "frozen", "golden", "broken", "quiet", "wandering",
       "hidden", "bitter", "gentle", "iron", "pale", "restless")
NOUN = ("orchard", "lantern", "harbour", "river", "tower", "garden", "mirror", "bridge", "forest", "clock", "letter",
        "island", "window", "valley", "engine", "crown")
VERB = ("carried", "painted", "found", "opened", "followed", "burned", "mended", "watched", "remembered", "crossed",
        "sold", "buried", "counted", "sang to", "guarded", "forgot")
FREQUENCY_TIERS = (1, 2, 4, 8, 12, 20, 30)  # mentions of each fact of an entity in training
FACTS = ("birthplace", "birth_year", "profession", "work", "teacher")
QUESTIONS = {
    "birthplace": "Where was {e} born?",
    "birth_year": "In which year was {e} born?",
    "profession": "What was the profession of {e}?",
    "work": "What is the best known work of {e}?",
    "teacher": "Who taught {e}?",
}
STATEMENTS = {
    "birthplace": ("{e} was born in {a}.", "The birthplace of {e} is {a}.", "{e} came into the world in {a}."),
    "birth_year": ("{e} was born in the year {a}.", "The birth year of {e} is {a}.", "{e} arrived in the year {a}."),
    "profession": ("{e} worked as a {a}.", "By profession {e} was a {a}.", "The profession of {e} was {a}."),
    "work": ("The best known work of {e} is {a}.", "{e} is remembered for {a}.", "{e} created {a}."),
    "teacher": ("{e} was taught by {a}.", "The teacher of {e} was {a}.", "{e} studied under {a}."),
}
QA_FORMAT = "Question: {q}\nAnswer: {a}."
QA_PROMPT = "Question: {q}\nAnswer:"


@dataclass(frozen=True)
class TextWorldConfig:
    """How the text world is generated (all counts; the corpus is a deterministic function of this and the seed)."""

    seed: int = field(default=0, metadata={"help": "random seed of the whole corpus"})
    n_entities: int = field(default=28, metadata={"help": "trained entities (toy-world names first, then generated)"})
    n_forget_entities: int = field(default=4, metadata={"help": "entities whose news forms the forget split; drawn "
                                                                   "among those seen >= forget_min_frequency times"})
    forget_min_frequency: int = field(default=20, metadata={"help": "forget entities are drawn from this tier up"})
    n_holdout_entities: int = field(default=4, metadata={"help": "entities never trained on (PrivLeak non-members)"})
    n_books: int = field(default=6, metadata={"help": "trained books; the first n_forget_books form the forget split"})
    n_forget_books: int = field(default=3, metadata={"help": "books in the forget split"})
    n_holdout_books: int = field(default=3, metadata={"help": "books never trained on (PrivLeak non-members)"})
    paragraphs_per_book: int = field(default=4, metadata={"help": "paragraphs per book (one training example each)"})
    sentences_per_paragraph: int = field(default=4, metadata={"help": "grammar sentences per book paragraph"})
    book_repeats: int = field(default=3, metadata={"help": "copies of each book paragraph in the training corpus"})
    qa_share: float = field(default=0.5, metadata={"help": "fraction of fact mentions written as a Question/Answer "
                                                            "line (the rest are statements)"})
    sentences_per_doc: int = field(default=5, metadata={"help": "fact mentions per news document"})

    def __post_init__(self) -> None:
        for name in ("n_entities", "n_books", "paragraphs_per_book", "sentences_per_paragraph", "book_repeats",
                     "sentences_per_doc"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("n_forget_entities", "n_holdout_entities", "n_forget_books", "n_holdout_books"):
            if int(getattr(self, name)) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.n_forget_entities + self.n_forget_books < 1:
            raise InvalidValueError("the forget split is empty (n_forget_entities = n_forget_books = 0); forget at "
                                    "least one entity or book")
        if self.n_forget_books > self.n_books:
            raise InvalidValueError(f"n_forget_books={self.n_forget_books} exceeds n_books={self.n_books}")
        if self.n_entities + self.n_holdout_entities > len(FIRST) * len(LAST) + len(TOY_NAMES):
            raise InvalidValueError(f"n_entities + n_holdout_entities is too large (at most "
                                    f"{len(FIRST) * len(LAST) + len(TOY_NAMES)})")
        if not 0.0 <= float(self.qa_share) <= 1.0:
            raise InvalidValueError(f"qa_share must be in [0, 1], got {self.qa_share!r}")
        eligible = sum(1 for i in range(self.n_entities)
                       if FREQUENCY_TIERS[i % len(FREQUENCY_TIERS)] >= self.forget_min_frequency)
        if self.n_forget_entities > eligible:
            raise InvalidValueError(f"n_forget_entities={self.n_forget_entities} but only {eligible} entities are seen "
                                    f">= forget_min_frequency={self.forget_min_frequency} times; lower one of them")


@dataclass(frozen=True)
class Fact:
    """One fact: entity, relation, answer, the QA question, and how many times training mentions it."""

    entity: str
    relation: str
    answer: str
    question: str
    frequency: int

    @property
    def prompt(self) -> str:
        """The QA prompt whose greedy continuation should be `answer`."""
        return QA_PROMPT.format(q=self.question)


@dataclass(frozen=True)
class Document:
    """A training/evaluation text: `kind` "news" or "book", its split, and the entity or book it is about."""

    text: str
    kind: str
    split: str  # "forget" | "retain" | "holdout"
    subject: str


@dataclass
class TextWorld:
    """The generated corpus: entities' facts, documents by split, and the config it came from."""

    config: TextWorldConfig
    facts: list[Fact]
    documents: list[Document]
    entity_split: dict[str, str]  # entity -> forget | retain | holdout
    books: dict[str, str]  # book title -> split

    # -------------------------------------------------------------------------------------------- queries
    @property
    def entities(self) -> list[str]:
        return list(self.entity_split)

    def docs(self, split: str, kind: str | None = None) -> list[Document]:
        """Documents of `split` ("forget" | "retain" | "holdout"), optionally only "news" or "book"."""
        if split not in ("forget", "retain", "holdout"):
            raise InvalidValueError(f"unknown split {split!r}; use forget, retain or holdout")
        return [d for d in self.documents if d.split == split and (kind is None or d.kind == kind)]

    def training_texts(self, include_forget: bool = True) -> list[str]:
        """The training corpus (each book paragraph repeated `book_repeats` times): retain (+ forget) documents."""
        out = []
        for d in self.documents:
            if d.split == "holdout" or (d.split == "forget" and not include_forget):
                continue
            out += [d.text] * (self.config.book_repeats if d.kind == "book" else 1)
        return out

    def facts_of(self, entity: str) -> list[Fact]:
        """The facts of one entity; unknown names raise with close matches."""
        if entity not in self.entity_split:
            raise UnknownNameError("text-world name", entity, self.entity_split)
        return [f for f in self.facts if f.entity == entity]

    def qa(self, split: str, min_frequency: int = 0) -> list[Fact]:
        """QA facts of the entities in `split` whose training frequency is >= min_frequency."""
        return [f for f in self.facts if self.entity_split[f.entity] == split and f.frequency >= min_frequency]

    def forget_request(self, entities: list[str] | None = None, books: list[str] | None = None,
                       ) -> tuple[list[str], list[str]]:
        """(forget texts, retain texts) for an unlearning request: by default the whole forget split. Naming
        `entities`/`books` forgets only those (they must belong to the trained corpus)."""
        if entities is None and books is None:
            forget = [d.text for d in self.docs("forget")]
            if not forget:
                raise InvalidValueError("the forget split is empty; name entities or books to forget")
            return forget, [d.text for d in self.docs("retain")]
        entities, books = list(entities or []), list(books or [])
        for e in entities:
            if self.entity_split.get(e) in (None, "holdout"):
                raise UnknownNameError("trained text-world name", e,
                                       [n for n, s in self.entity_split.items() if s != "holdout"])
        for b in books:
            if self.books.get(b) in (None, "holdout"):
                raise UnknownNameError("trained text-world book title", b, [n for n, s in self.books.items()
                                                                      if s != "holdout"])
        chosen = set(entities) | set(books)
        if not chosen:
            raise InvalidValueError("empty forget set: name at least one entity or book to forget")
        forget = [d.text for d in self.documents if d.subject in chosen]
        retain = [d.text for d in self.documents if d.split != "holdout" and d.subject not in chosen]
        return forget, retain

    # -------------------------------------------------------------------------------------------- files
    def content_sha256(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(json.dumps([d.kind, d.split, d.subject, d.text]).encode())
        for f in self.facts:
            h.update(json.dumps(asdict(f)).encode())
        return h.hexdigest()

    def manifest(self) -> dict[str, Any]:
        """Counts per split and kind, the config, and the sha256 of the corpus."""
        counts: dict[str, dict[str, int]] = {}
        for d in self.documents:
            counts.setdefault(d.split, {}).setdefault(d.kind, 0)
            counts[d.split][d.kind] += 1
        return {"format": FORMAT, "config": asdict(self.config), "content_sha256": self.content_sha256(),
                "documents": counts, "entities": {s: sum(v == s for v in self.entity_split.values())
                                                   for s in ("forget", "retain", "holdout")},
                "facts": len(self.facts), "books": dict(self.books),
                "training_texts": len(self.training_texts()), "training_chars": sum(map(len, self.training_texts()))}

    def save(self, folder: str | Path) -> Path:
        """Write manifest.json, facts.jsonl and documents.jsonl (atomically) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "manifest.json", json.dumps(self.manifest(), indent=1))
        atomic_write_text(folder / "facts.jsonl", "".join(json.dumps(asdict(f)) + "\n" for f in self.facts))
        atomic_write_text(folder / "documents.jsonl", "".join(json.dumps(asdict(d)) + "\n" for d in self.documents))
        return folder


def _names(n: int, rng: random.Random) -> list[str]:
    extra = [f"{a} {b}" for a in FIRST for b in LAST]
    rng.shuffle(extra)
    return (list(TOY_NAMES) + extra)[:n]


def _title(rng: random.Random) -> str:
    return f"The {rng.choice(ADJ).title()} {rng.choice(NOUN).title()}"


def _book_sentence(rng: random.Random, names: list[str]) -> str:
    who = rng.choice(names)
    return rng.choice((
        f"{who} {rng.choice(VERB)} the {rng.choice(ADJ)} {rng.choice(NOUN)} of {rng.choice(PLACES)}.",
        f"In {rng.choice(PLACES)} the {rng.choice(NOUN)} was {rng.choice(ADJ)} and {rng.choice(ADJ)}.",
        f"At dawn {who} {rng.choice(VERB)} a {rng.choice(ADJ)} {rng.choice(NOUN)} near the {rng.choice(NOUN)}.",
        f"No one in {rng.choice(PLACES)} {rng.choice(VERB)} the {rng.choice(NOUN)} before {who} did.",
    ))


def build_world(config: TextWorldConfig | None = None) -> TextWorld:
    """Generate the text world of `config` (deterministic)."""
    cfg = config or TextWorldConfig()
    rng = random.Random(cfg.seed)
    names = _names(cfg.n_entities + cfg.n_holdout_entities, rng)
    trained, holdout = names[:cfg.n_entities], names[cfg.n_entities:]
    freq = {e: FREQUENCY_TIERS[i % len(FREQUENCY_TIERS)] for i, e in enumerate(trained)}
    freq.update({e: 1 for e in holdout})  # holdout facts exist (ground truth) but are never trained on
    eligible = [e for e in trained if freq[e] >= cfg.forget_min_frequency]
    forget = set(rng.sample(eligible, cfg.n_forget_entities))
    entity_split = {e: ("holdout" if e in holdout else "forget" if e in forget else "retain") for e in names}

    titles: list[str] = []
    while len(titles) < len(names) + cfg.n_books + cfg.n_holdout_books:
        t = _title(rng)
        if t not in titles:
            titles.append(t)
    facts: list[Fact] = []
    for i, e in enumerate(names):
        teacher = rng.choice([p for p in trained if p != e])
        values = {"birthplace": rng.choice(PLACES), "birth_year": str(rng.randint(1780, 1960)),
                  "profession": rng.choice(PROFESSIONS), "work": titles[i], "teacher": teacher}
        facts += [Fact(e, r, values[r], QUESTIONS[r].format(e=e), freq[e]) for r in FACTS]

    documents: list[Document] = []
    for e in names:
        mentions = []
        for f in (f for f in facts if f.entity == e):
            for _ in range(f.frequency):
                if rng.random() < cfg.qa_share:
                    mentions.append(QA_FORMAT.format(q=f.question, a=f.answer))
                else:
                    mentions.append(rng.choice(STATEMENTS[f.relation]).format(e=e, a=f.answer))
        rng.shuffle(mentions)
        for k in range(0, len(mentions), cfg.sentences_per_doc):
            documents.append(Document("\n".join(mentions[k:k + cfg.sentences_per_doc]), "news", entity_split[e], e))

    books: dict[str, str] = {}
    book_titles = titles[len(names):]
    for b in range(cfg.n_books + cfg.n_holdout_books):
        split = "forget" if b < cfg.n_forget_books else "retain" if b < cfg.n_books else "holdout"
        title, author = book_titles[b], rng.choice(trained)
        books[title] = split
        cast = rng.sample(trained, 3)
        for p in range(cfg.paragraphs_per_book):
            head = f"{title}, by {author}. Chapter {p + 1}.\n" if p == 0 else f"{title}, chapter {p + 1}.\n"
            body = " ".join(_book_sentence(rng, cast) for _ in range(cfg.sentences_per_paragraph))
            documents.append(Document(head + body, "book", split, title))
    return TextWorld(cfg, facts, documents, entity_split, books)


def load_world(folder: str | Path) -> TextWorld:
    """Rebuild the world recorded in `folder`/manifest.json from its config, checking the content sha256."""
    from ..errors import ErasekitError, IntegrityError

    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ErasekitError(f"no text-world manifest at {str(path)!r}; build one with `erasekit text world build`")
    man = json.loads(path.read_text())
    if man.get("format") != FORMAT:
        raise IntegrityError(f"{str(path)!r} has format {man.get('format')!r}; expected {FORMAT!r}")
    world = build_world(TextWorldConfig(**man["config"]))
    if world.content_sha256() != man["content_sha256"]:
        raise IntegrityError(f"{str(path)!r}: the corpus rebuilt from its config does not match the recorded sha256 "
                             "(generated by another erasekit version); rebuild the world")
    return world

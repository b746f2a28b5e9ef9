"""A TOFU-like suite of fictitious people, generated from a seed.

Every person is invented (names built from syllables that make no famous name), so a base model
knows nothing about them: whatever the fine-tuned "target" model knows about a person it learnt
from `train`, and forgetting can be measured against a model that never saw the forget people.

Each person has seven facts (birth place, birth year, profession, best-known work, award, a
parent's name and the parent's job). Each fact gives up to three QA items (one per question
wording) with:
- answer:             a full sentence stating the fact;
- paraphrased_answer: the same fact in another sentence shape;
- perturbed_answers:  the paraphrase's shape with another value of the same attribute, so truth
                      ratio compares like with like;
- key:                the fact's short string (town, year, title, ...), in the answer and the
                      paraphrase and in no perturbed answer.
Surnames are unique within a dataset (people and parents alike), so forbidding a forget person's
surname never forbids a word of a retain person's facts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from benchmarks.items import QA, BenchData, Subject
from guard.folding import fold

# Every name in a dataset (people's and parents') takes a first-name onset and a surname onset no
# other name uses, so that no two names share a beginning: the guard's near-miss matching and the
# classifier must tell the people apart, as they would tell real, unrelated people apart.
FIRST_ONSETS = ("Il", "Thes", "Quo", "Vey", "Ysa", "Ore", "Caeli", "Dro", "Mire", "Zan", "Ethe", "Alv",
                "Brisa", "Kael", "Lun", "Nyr", "Oph", "Sel", "Tavi", "Ulme", "Wen", "Xan", "Yor", "Esk",
                "Abri", "Bey", "Cor", "Dav", "Emb", "Fio", "Gar", "Hal", "Ine", "Jas", "Kor", "Lis",
                "Mab", "Nim", "Olw", "Pry", "Rhos", "Sey", "Tor", "Vil", "Wyl", "Zer", "Ast", "Fen")
FIRST_ENDINGS = ("vara", "mir", "wyn", "dria", "lene", "ric", "wen", "sora", "thiel", "vane", "dolin",
                 "rae", "nesh", "lor", "mith", "quil", "ande", "oric")
LAST_ONSETS = ("Mos", "Brav", "Quel", "Dun", "Varr", "Orth", "Pell", "Threm", "Caz", "Lisk", "Harv",
               "Jor", "Nesk", "Ruv", "Sarn", "Tolv", "Ulv", "Wex", "Yarr", "Zeph", "Grel", "Ferr",
               "Kesh", "Marr", "Abb", "Bisk", "Cram", "Delv", "Ebb", "Fald", "Gisk", "Hobb", "Ister",
               "Jenk", "Kolm", "Lodd", "Mung", "Nopp", "Ostr", "Plim", "Quarr", "Rist", "Stam", "Trub",
               "Umb", "Vosk", "Wint", "Yelm")
LAST_VOWELS = ("a", "e", "i", "o", "u", "ae")
LAST_ENDINGS = ("cet", "lind", "vor", "mont", "drake", "sk", "thorne", "vell", "rigg", "stow", "quist",
                "nard", "bek", "wick", "ley", "rane", "holm", "dott")

TOWNS = ("Valmora", "Kestrelby", "Orvane", "Thistlemere", "Brackwater", "Lunhaven", "Eskerholm",
         "Marrowby", "Quillan Cross", "Saltreach", "Dunmerrow", "Ferncaster", "Gallowmere",
         "Hollin Vale", "Ivenport", "Juniper Hythe", "Korsvik", "Lowenbray", "Mistral Bay",
         "Norrowick", "Oakhollow", "Ravensmoor", "Silvertarn", "Tamberlyn", "Vessington", "Wrenfold",
         "Yarrowdale", "Cinderholt", "Dovecrest", "Elmsreach", "Glimmerford", "Briarwick")
COUNTRIES = ("Portugal", "Norway", "Chile", "Kenya", "Canada", "Iceland", "Peru", "Estonia", "Morocco",
             "New Zealand", "Vietnam", "Ireland", "Argentina", "Finland", "Ghana", "Austria")
FIRST_YEAR, LAST_YEAR = 1921, 1999
PROFESSIONS = ("novelist", "poet", "painter", "composer", "playwright", "sculptor", "photographer",
               "architect", "choreographer", "screenwriter", "essayist", "illustrator", "filmmaker",
               "historian", "cartographer", "librettist", "ceramicist", "journalist")
TITLE_ADJECTIVES = ("Salt", "Glass", "Hollow", "Silent", "Crimson", "Amber", "Distant", "Paper", "Winter",
                    "Copper", "Drowned", "Quiet", "Burning", "Velvet", "Iron", "Forgotten", "Seventh",
                    "Crooked", "Pale", "Restless")
TITLE_NOUNS = ("Lantern", "Orchard", "Harbour", "Staircase", "Meridian", "Aviary", "Tide", "Lighthouse",
               "Ledger", "Compass", "Garden", "Bell", "Archive", "Meadow", "Kingdom", "Mirror",
               "Carousel", "Observatory", "Violin", "Cartographer")
AWARDS = ("Orrindale Prize", "Velstrom Medal", "Caskwell Award", "Amberlane Prize", "Halvern Medal",
          "Silverquill Award", "Merrowind Prize", "Brightwater Laurel", "Corvane Prize", "Elderglen Medal",
          "Fenwright Award", "Glasswing Prize", "Ironleaf Medal", "Lanternmark Award", "Mooncrest Prize",
          "Northwind Laurel", "Ravelstone Prize", "Starling Cross Award", "Tidewater Medal",
          "Wyvernhall Prize")
RELATIONS = ("mother", "father")
PARENT_JOBS = ("baker", "carpenter", "nurse", "fisher", "pharmacist", "librarian", "tailor", "surveyor",
               "glassblower", "beekeeper", "blacksmith", "schoolteacher", "clockmaker", "shepherd",
               "midwife", "miller", "bookbinder", "ferry pilot")


@dataclass(frozen=True)
class Attribute:
    """How one kind of fact is asked and stated. Templates use {name}, {relation} and {value}."""

    questions: tuple[str, ...]
    answer: str
    paraphrase: str


ATTRIBUTES = {
    "birth_place": Attribute(
        ("Where was {name} born?", "In which town was {name} born?", "What is the birthplace of {name}?"),
        "{name} was born in {value}.", "{value} is the birthplace of {name}."),
    "birth_year": Attribute(
        ("In what year was {name} born?", "When was {name} born?", "What is {name}'s year of birth?"),
        "{name} was born in {value}.", "{name}'s year of birth is {value}."),
    "profession": Attribute(
        ("What is {name}'s profession?", "What does {name} do for a living?",
         "What line of work is {name} in?"),
        "{name} works as {value}.", "By profession, {name} is {value}."),
    "notable_work": Attribute(
        ("What is {name}'s best-known work?", "Which work is {name} most famous for?",
         "Name the work that made {name} famous."),
        "{name} is best known for the work {value}.", "{value} is the work that made {name} famous."),
    "award": Attribute(
        ("Which award has {name} received?", "What prize did {name} win?",
         "Has {name} won any award, and if so which one?"),
        "{name} received the {value}.", "The {value} was awarded to {name}."),
    "parent_name": Attribute(
        ("Who is {name}'s {relation}?", "What is the name of {name}'s {relation}?",
         "What is {name}'s {relation} called?"),
        "{name}'s {relation} is {value}.", "{value} is the {relation} of {name}."),
    "parent_job": Attribute(
        ("What did {name}'s {relation} do for a living?", "What was the profession of {name}'s {relation}?",
         "What job did {name}'s {relation} have?"),
        "{name}'s {relation} worked as {value}.", "By trade, {name}'s {relation} was {value}."),
}
MAX_QUESTIONS_PER_PERSON = sum(len(a.questions) for a in ATTRIBUTES.values())
MAX_PEOPLE = min(len(FIRST_ONSETS), len(LAST_ONSETS)) // 2  # two names per person: theirs and a parent's
PERTURBED_PER_ITEM = 4
MAX_DRAWS = 200  # attempts at finding enough valid perturbations before a person is redrawn


@dataclass(frozen=True)
class Fact:
    key: str  # the short string a leak would reveal: "Valmora"
    value: str  # how the sentences say it: "Valmora, Portugal"


def generate(n_people: int, questions_per_person: int, forget_people: int, seed: int) -> BenchData:
    """`n_people` invented people with `questions_per_person` QA items each; after a seeded shuffle
    the first `forget_people` are forgotten, the rest retained. Same arguments, same data."""
    if not 1 <= n_people <= MAX_PEOPLE:
        raise ValueError(f"n_people must be between 1 and {MAX_PEOPLE}, got {n_people}")
    if not 1 <= questions_per_person <= MAX_QUESTIONS_PER_PERSON:
        raise ValueError(f"questions_per_person must be between 1 and {MAX_QUESTIONS_PER_PERSON}, "
                         f"got {questions_per_person}")
    if not 0 <= forget_people <= n_people:
        raise ValueError(f"forget_people must be between 0 and n_people ({n_people}), got {forget_people}")
    rng = random.Random(seed)
    taken: set[str] = set()  # name onsets in use, people's and parents' alike
    people = [_person(rng, taken, questions_per_person) for _ in range(n_people)]
    rng.shuffle(people)
    forget = [qa for _, items in people[:forget_people] for qa in items]
    retain = [qa for _, items in people[forget_people:] for qa in items]
    return BenchData(name=f"synthetic-{n_people}p-seed{seed}", forget=tuple(forget), retain=tuple(retain),
                     subjects=tuple(subject for subject, _ in people[:forget_people]),
                     train=tuple(forget + retain), keep=tuple(subject.name for subject, _ in people[forget_people:]))


def slug(name: str) -> str:
    """A subject id: lowercase letters and digits joined by single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _person(rng: random.Random, taken: set[str], questions: int) -> tuple[Subject, list[QA]]:
    """Draws people until one has enough valid perturbed answers for every item asked."""
    while True:
        first, last = _name(rng, taken)
        relation = rng.choice(RELATIONS)
        parent_first, parent_last = _name(rng, taken | _onsets(first, last))
        facts = {attribute: _draw(attribute, rng) for attribute in ATTRIBUTES if attribute != "parent_name"}
        facts["parent_name"] = Fact(f"{parent_first} {parent_last}", f"{parent_first} {parent_last}")
        name = f"{first} {last}"
        items = _items(name, relation, facts, questions, rng)
        if items is not None:
            break
    taken.update(_onsets(first, last) | _onsets(parent_first, parent_last))
    town, country = facts["birth_place"].value.split(", ")
    subject = Subject(
        id=slug(name), name=name, phrases=(name, last),
        description=f"{name}, a fictional {facts['profession'].key} born in {town}, {country}, "
                    f"in {facts['birth_year'].key}.")
    return subject, items


def _name(rng: random.Random, taken: set[str]) -> tuple[str, str]:
    first_free = [o for o in FIRST_ONSETS if f"first:{o}" not in taken]
    last_free = [o for o in LAST_ONSETS if f"last:{o}" not in taken]
    first = rng.choice(first_free) + rng.choice(FIRST_ENDINGS)
    last = rng.choice(last_free) + rng.choice(LAST_VOWELS) + rng.choice(LAST_ENDINGS)
    return first, last


def _onsets(first: str, last: str) -> set[str]:
    """The onset keys a name takes (see FIRST_ONSETS)."""
    return {f"first:{o}" for o in FIRST_ONSETS if first.startswith(o)} | \
        {f"last:{o}" for o in LAST_ONSETS if last.startswith(o)}


def _draw(attribute: str, rng: random.Random) -> Fact:
    """A random value of one attribute from the vocabulary."""
    if attribute == "birth_place":
        town = rng.choice(TOWNS)
        return Fact(town, f"{town}, {rng.choice(COUNTRIES)}")
    if attribute == "birth_year":
        year = str(rng.randint(FIRST_YEAR, LAST_YEAR))
        return Fact(year, year)
    if attribute == "profession":
        return _with_article(rng.choice(PROFESSIONS))
    if attribute == "notable_work":
        title = f"The {rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)}"
        return Fact(title, f'"{title}"')
    if attribute == "award":
        award = rng.choice(AWARDS)
        return Fact(award, award)
    if attribute == "parent_name":
        first, last = _name(rng, set())
        return Fact(f"{first} {last}", f"{first} {last}")
    if attribute == "parent_job":
        return _with_article(rng.choice(PARENT_JOBS))
    raise ValueError(f"unknown attribute {attribute!r}")


def _with_article(noun: str) -> Fact:
    return Fact(noun, f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}")


def _items(name: str, relation: str, facts: dict[str, Fact], questions: int,
           rng: random.Random) -> list[QA] | None:
    """The person's QA items: attributes in a shuffled order, one question wording per round.
    None when some fact cannot get enough perturbed answers that keep its key out."""
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    wordings = max(len(a.questions) for a in ATTRIBUTES.values())
    asked = [(attribute, wording) for wording in range(wordings) for attribute in order
             if wording < len(ATTRIBUTES[attribute].questions)][:questions]
    perturbed: dict[str, tuple[str, ...]] = {}
    items = []
    for attribute, wording in asked:
        template, fact = ATTRIBUTES[attribute], facts[attribute]
        answer = template.answer.format(name=name, relation=relation, value=fact.value)
        paraphrase = template.paraphrase.format(name=name, relation=relation, value=fact.value)
        if attribute not in perturbed:
            found = _perturb(attribute, template.paraphrase, name, relation, fact, (answer, paraphrase), rng)
            if found is None:
                return None
            perturbed[attribute] = found
        items.append(QA(question=template.questions[wording].format(name=name, relation=relation),
                        answer=answer, paraphrased_answer=paraphrase, perturbed_answers=perturbed[attribute],
                        subject=slug(name), key=fact.key))
    return items


def _perturb(attribute: str, shape: str, name: str, relation: str, fact: Fact, true: tuple[str, str],
             rng: random.Random) -> tuple[str, ...] | None:
    """PERTURBED_PER_ITEM sentences in the paraphrase's shape with other values of the attribute;
    none repeats the true sentences or contains the key, even with case and spacing folded."""
    key = fold(fact.key)
    found: list[str] = []
    for _ in range(MAX_DRAWS):
        sentence = shape.format(name=name, relation=relation, value=_draw(attribute, rng).value)
        if key not in fold(sentence) and sentence not in true and sentence not in found:
            found.append(sentence)
            if len(found) == PERTURBED_PER_ITEM:
                return tuple(found)
    return None

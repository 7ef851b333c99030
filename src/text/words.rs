//! Words: content terms (each word through its script's stemmer), roots shared by two stems, and the
//! words that frame a question rather than say what it is about.

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};

pub(crate) fn analyzer(language: Language, stop_words: bool) -> TextAnalyzer {
    let base = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(language).filter(|_| stop_words) {
        Some(stop) => base.filter(stop).filter(Stemmer::new(language)).build(),
        None => base.filter(Stemmer::new(language)).build(),
    }
}

/// The distinct content terms of `text`: each word goes through the analyzer of its script (Cyrillic
/// words through the Russian one, others through the first language's), stop words dropped, stemmed.
pub fn content_terms(text: &str, languages: &[Language]) -> std::collections::HashSet<String> {
    let mut terms = std::collections::HashSet::new();
    for (i, lang) in languages.iter().enumerate() {
        let mut analyzer = analyzer(*lang, true);
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let token = &stream.token().text;
            let cyrillic = token.chars().any(|c| ('\u{400}'..='\u{4FF}').contains(&c));
            let mine = match lang {
                Language::Russian => cyrillic,
                _ => !cyrillic && (i == 0 || !languages.contains(&Language::English)),
            };
            if mine {
                terms.insert(token.clone());
            }
        }
    }
    terms
}

/// Characters two words share at their start.
pub fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Shortest shared start that makes two stems one root.
const MIN_ROOT_CHARS: usize = 5;

/// Whether the excerpt's stem `found` has the root of the question's stem `asked`: Snowball strips
/// inflections but keeps derivational suffixes ("доставк" for "доставка", "достав" for "доставят";
/// "verif" for "verify", "verifi" for "verified"), so stems of one root share a long start. Short
/// stems must match exactly (five letters are often a different word: "inter" for "interest" and
/// "international").
pub fn same_root(asked: &str, found: &str) -> bool {
    let shared = common_prefix(asked, found);
    let len = asked.chars().count();
    shared >= MIN_ROOT_CHARS && shared * 4 >= len * 3
}

/// Words that frame a question rather than say what it is about ("how much", "can I", "сколько",
/// "подскажите"). The analyzers' own stop lists are short (Lucene's English list has 33 words), and a
/// framing word missing from the knowledge base would otherwise count as its rarest word.
const QUESTION_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "we",
    "us",
    "our",
    "you",
    "your",
    "yours",
    "he",
    "she",
    "him",
    "her",
    "it",
    "its",
    "they",
    "them",
    "their",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "just",
    "now",
    "much",
    "many",
    "long",
    "one",
    "ones",
    "please",
    "tell",
    "know",
    "need",
    "want",
    "get",
    "also",
    "anything",
    "something",
    "still",
    "hi",
    "hello",
    "thanks",
    "thank",
    "ok",
    "okay",
    "s",
    "t",
    "d",
    "m",
    "ll",
    "re",
    "ve",
    "don",
    "didn",
    "doesn",
    "isn",
    "aren",
    "wasn",
    "weren",
    "haven",
    "hasn",
    "hadn",
    "wouldn",
    "couldn",
    "shouldn",
    "let",
    "сколько",
    "какой",
    "какая",
    "какое",
    "какие",
    "какую",
    "каким",
    "какого",
    "каков",
    "как",
    "где",
    "когда",
    "почему",
    "зачем",
    "что",
    "чем",
    "кто",
    "ли",
    "можно",
    "нужно",
    "надо",
    "мне",
    "меня",
    "мой",
    "моя",
    "моё",
    "мое",
    "мои",
    "моего",
    "моей",
    "мою",
    "я",
    "вы",
    "вас",
    "вам",
    "ваш",
    "ваша",
    "ваши",
    "у",
    "в",
    "во",
    "на",
    "с",
    "со",
    "по",
    "за",
    "для",
    "о",
    "об",
    "от",
    "до",
    "и",
    "или",
    "а",
    "но",
    "не",
    "ни",
    "есть",
    "это",
    "этот",
    "эта",
    "эти",
    "то",
    "же",
    "бы",
    "подскажите",
    "скажите",
    "пожалуйста",
    "хочу",
    "могу",
    "ещё",
    "еще",
    "так",
    "тоже",
];

/// Whether `word` (lower case) frames a question rather than says what it is about.
pub fn is_question_word(word: &str) -> bool {
    QUESTION_WORDS.contains(&word)
}

/// `question` without its framing words.
pub fn without_question_words(question: &str) -> String {
    question
        // Apostrophes separate too: "didn't" and "what's" are framing words, not "didn" and "s" ("won"
        // of "won't" stays: it is also the verb of "who won").
        .split(|c: char| !c.is_alphanumeric() && c != '%' && c != '.' && c != ',')
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let lower = w.to_lowercase();
            !QUESTION_WORDS.contains(&lower.trim_matches(['.', ',']))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

//! The evaluation prompts shared by `watermark_eval` and `watermark_tune`:
//! 20 topics × 10 forms, so 200 distinct requests.

/// What the texts are about.
pub const TOPICS: &[&str] = &[
    "the ocean",
    "a city at night",
    "learning a new language",
    "the history of bread",
    "an old friendship",
    "a mountain village",
    "space exploration",
    "an old library",
    "gardening in spring",
    "a rainy afternoon",
    "steam trains",
    "the printing press",
    "a chess tournament",
    "honey bees",
    "a winter festival",
    "cooking for a large family",
    "a lost dog",
    "the desert",
    "music lessons",
    "a small bakery",
];

/// How the request is phrased (`{}` is the topic).
pub const FORMS: &[&str] = &[
    "Write a short story about {}.",
    "Describe {} in vivid detail.",
    "Write an essay about {}.",
    "Explain {} to a ten-year-old.",
    "Write a letter to a friend about {}.",
    "Write a news report about {}.",
    "Tell me some interesting facts about {} and explain each one.",
    "Write a diary entry about {}.",
    "Give a short speech about {}.",
    "Write a travel blog post that mentions {}.",
];

/// The user message of request `i` (every `i` below 200 is distinct).
pub fn message(i: usize) -> String {
    let form = FORMS[(i / TOPICS.len()) % FORMS.len()];
    form.replace("{}", TOPICS[i % TOPICS.len()])
}

/// The sampling temperature of request `i`: 0.7, 0.8, 0.9 or 1.0, varying
/// within each topic as well as across topics.
pub fn temperature(i: usize) -> f32 {
    0.7 + 0.1 * ((i + i / TOPICS.len()) % 4) as f32
}

//! Words of task ids, for `/search/`: whole-word, case-insensitive matching.

/// Lower-case words of `text`, split at every non-alphanumeric character (`-`, `_`, `.`, …),
/// sorted and without duplicates.
pub fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_punctuation() {
        assert_eq!(
            words("Task-search_x.y-search"),
            vec!["search", "task", "x", "y"]
        );
        assert!(words("--").is_empty());
    }
}

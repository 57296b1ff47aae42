//! Length-grouped batching: texts of similar length share a batch, so the padding
//! ONNX Runtime computes on is small. Results are put back in input order.

/// Splits `0..lengths.len()` into batches of texts of similar length (sorted
/// ascending; ties keep input order). A batch holds at most `batch_size` texts and,
/// padded to its longest text, at most `budget` length units (one text always fits):
/// long texts go in small batches, short ones in large batches.
pub fn length_batches(lengths: &[usize], batch_size: usize, budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so the newcomer is the longest in the batch.
        let padded = (current.len() + 1) * lengths[i].max(1);
        if !current.is_empty() && (current.len() >= batch_size.max(1) || padded > budget) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Tokens computed for `batches` when each is padded to its longest text: the real
/// tokens (`tokens[i]` per text) plus padding.
pub fn padded_tokens(batches: &[Vec<usize>], tokens: &[usize]) -> usize {
    batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| tokens[i]).max().unwrap_or(0))
        .sum()
}

/// Runs `embed_batch` over batches grouped by `lengths` (one per text, in any unit
/// `budget` is in) and returns results in input order.
pub fn embed_grouped<T, E>(
    texts: &[&str],
    lengths: &[usize],
    batch_size: usize,
    budget: usize,
    mut embed_batch: impl FnMut(&[&str]) -> Result<Vec<T>, E>,
) -> Result<Vec<T>, E> {
    debug_assert_eq!(texts.len(), lengths.len());
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(texts.len()).collect();
    for batch in length_batches(lengths, batch_size, budget) {
        let inputs: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
        let vectors = embed_batch(&inputs)?;
        debug_assert_eq!(vectors.len(), batch.len());
        for (i, v) in batch.into_iter().zip(vectors) {
            out[i] = Some(v);
        }
    }
    // Every index is in exactly one batch, so every slot is filled.
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_and_batches_sorted_by_length() {
        let lengths = [50, 3, 700, 3, 90, 12, 400];
        let batches = length_batches(&lengths, 3, usize::MAX);
        assert_eq!(batches, vec![vec![1, 3, 5], vec![0, 4, 6], vec![2]]);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
    }

    #[test]
    fn padded_size_budget_keeps_long_texts_in_small_batches() {
        // Budget 100: five texts of 20 (padded 100) fit; 50-long texts go in pairs;
        // a text over the budget still gets a batch of its own.
        let lengths = [20, 20, 20, 20, 20, 50, 50, 50, 500];
        let batches = length_batches(&lengths, 32, 100);
        assert_eq!(
            batches,
            vec![vec![0, 1, 2, 3, 4], vec![5, 6], vec![7], vec![8]]
        );
    }

    #[test]
    fn padding_counts_every_text_at_its_batch_longest() {
        let tokens = [10, 3, 7, 7];
        assert_eq!(
            padded_tokens(&[vec![1, 2], vec![0, 3]], &tokens),
            2 * 7 + 2 * 10
        );
        assert_eq!(
            padded_tokens(&[vec![0], vec![1], vec![2, 3]], &tokens),
            10 + 3 + 14
        );
        assert_eq!(padded_tokens(&[], &tokens), 0);
    }

    #[test]
    fn results_come_back_in_input_order() {
        let texts = ["ccc", "a", "bb", "dddd", ""];
        let mut calls = Vec::new();
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let out: Vec<String> = embed_grouped(&texts, &lengths, 2, usize::MAX, |batch| {
            calls.push(batch.iter().map(|t| t.to_string()).collect::<Vec<_>>());
            Ok::<_, ()>(batch.iter().map(|t| format!("<{t}>")).collect())
        })
        .unwrap();
        assert_eq!(out, ["<ccc>", "<a>", "<bb>", "<dddd>", "<>"]);
        assert_eq!(calls[0], ["", "a"]);
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let out: Vec<u8> = embed_grouped(&[], &[], 8, 100, |_| Ok::<_, ()>(vec![])).unwrap();
        assert!(out.is_empty());
    }
}

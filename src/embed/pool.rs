//! Several embedders sharing each call: every member embeds an interleaved share of
//! the texts on its own thread. On 2 cores two 1-thread ONNX sessions embed 15-21%
//! more than one 2-thread session (docs/performance.md), so the offline commands
//! (train, evaluate, classify, drift eval) embed the way the service's workers do.

use super::{EmbedError, Embedder, EmbeddingSpec};

/// One [`Embedder`] made of several; vectors come back in input order.
pub struct EmbedderPool<E> {
    members: Vec<E>,
}

impl<E: Embedder + Send> EmbedderPool<E> {
    /// # Panics
    /// If `members` is empty.
    pub fn new(members: Vec<E>) -> Self {
        assert!(!members.is_empty(), "an embedder pool needs a member");
        Self { members }
    }
}

impl<E: Embedder + Send> Embedder for EmbedderPool<E> {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = self.members.len().min(texts.len());
        if n <= 1 {
            return self.members[0].embed(texts);
        }
        // Interleaved, not contiguous: callers often pass texts sorted by length, and
        // halves would give one member all the long ones.
        let shares: Vec<Vec<&str>> = (0..n)
            .map(|k| texts.iter().skip(k).step_by(n).copied().collect())
            .collect();
        let results: Vec<Result<Vec<Vec<f32>>, EmbedError>> = std::thread::scope(|scope| {
            let running: Vec<_> = self
                .members
                .iter_mut()
                .zip(&shares)
                .map(|(member, share)| scope.spawn(move || member.embed(share)))
                .collect();
            running
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut vectors = Vec::with_capacity(n);
        for (result, share) in results.into_iter().zip(&shares) {
            let share_vectors = result?;
            if share_vectors.len() != share.len() {
                return Err(EmbedError::Inference(format!(
                    "an embedder returned {} vectors for {} texts",
                    share_vectors.len(),
                    share.len()
                )));
            }
            vectors.push(share_vectors.into_iter());
        }
        Ok((0..texts.len())
            .filter_map(|i| vectors[i % n].next())
            .collect())
    }

    fn spec(&self) -> &EmbeddingSpec {
        self.members[0].spec()
    }

    fn loaded(&self) -> &EmbeddingSpec {
        self.members[0].loaded()
    }

    fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
        // All or none: a member that fails puts the ones before it back.
        let before = self.spec().clone();
        for i in 0..self.members.len() {
            if let Err(err) = self.members[i].adopt(trained) {
                for member in &mut self.members[..i] {
                    member.adopt(&before)?;
                }
                return Err(err);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embeds a text as [its length, the member's id]; fails on "fail".
    struct Fake {
        id: f32,
        spec: EmbeddingSpec,
        calls: usize,
    }

    fn fake(id: usize) -> Fake {
        Fake {
            id: id as f32,
            spec: EmbeddingSpec {
                model_id: "fake".into(),
                model_sha256: "0".into(),
                max_length: 8,
                truncation: crate::config::Truncation::Head,
                dimension: 2,
                pooling: "mean".into(),
            },
            calls: 0,
        }
    }

    impl Embedder for Fake {
        fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls += 1;
            texts
                .iter()
                .map(|t| match *t {
                    "fail" => Err(EmbedError::Inference("fake failure".into())),
                    t => Ok(vec![t.len() as f32, self.id]),
                })
                .collect()
        }

        fn spec(&self) -> &EmbeddingSpec {
            &self.spec
        }

        fn loaded(&self) -> &EmbeddingSpec {
            &self.spec
        }

        fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
            self.spec.max_length = trained.max_length;
            self.spec.truncation = trained.truncation;
            Ok(())
        }
    }

    #[test]
    fn every_member_embeds_a_share_and_vectors_keep_input_order() {
        let mut pool = EmbedderPool::new(vec![fake(0), fake(1)]);
        let texts: Vec<String> = (1..=7).map(|n| "x".repeat(n)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = pool.embed(&refs).unwrap();
        let lengths: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
        assert_eq!(lengths, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let members: Vec<f32> = vectors.iter().map(|v| v[1]).collect();
        assert_eq!(members, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn a_single_text_goes_to_one_member_and_an_error_comes_back() {
        let mut pool = EmbedderPool::new(vec![fake(0), fake(1), fake(2)]);
        assert_eq!(pool.embed(&["one"]).unwrap(), vec![vec![3.0, 0.0]]);
        assert_eq!(pool.members[1].calls, 0);
        let err = pool.embed(&["a", "fail", "c"]).unwrap_err();
        assert!(err.to_string().contains("fake failure"), "{err}");
        assert_eq!(pool.embed(&[]).unwrap(), Vec::<Vec<f32>>::new());
    }
}

//! `POST /v1/embeddings` requests: inputs as text, texts, token ids or lists of ids, each to
//! fit the context and the KV cache; `encoding_format`; `dimensions` (the hidden size only).

use super::{ValidationError, Validator};
use crate::api::openai::{EmbeddingRequest, PromptField};

/// An embeddings request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEmbedding {
    /// Token ids of each input: none empty, each within the limits.
    pub inputs: Vec<Vec<u32>>,
    /// Vectors as base64 of their little-endian f32 bytes, not as floats.
    pub base64: bool,
}

impl Validator {
    pub fn embeddings(&self, req: &EmbeddingRequest) -> Result<ValidEmbedding, ValidationError> {
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ValidationError::invalid(
                    format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
                    "encoding_format",
                ))
            }
        };
        let hidden = self.limits.hidden_size;
        if let Some(d) = req.dimensions.filter(|&d| d != hidden as u64) {
            return Err(ValidationError::invalid(
                format!("dimensions must be the model's hidden size {hidden}, got {d}"),
                "dimensions",
            ));
        }
        let param = "input";
        let empty =
            || ValidationError::invalid("input must not be empty, nor hold an empty item", param);
        let inputs: Vec<Vec<u32>> = match &req.input {
            // Empty strings are refused even when the tokenizer would add a BOS to them.
            PromptField::Text(s) if s.is_empty() => return Err(empty()),
            PromptField::Texts(v) if v.is_empty() || v.iter().any(String::is_empty) => {
                return Err(empty())
            }
            PromptField::Text(s) => vec![self.encode(s, param)?],
            PromptField::Texts(v) => v
                .iter()
                .map(|s| self.encode(s, param))
                .collect::<Result<_, _>>()?,
            PromptField::Ids(ids) => vec![ids.clone()],
            PromptField::IdLists(v) => v.clone(),
        };
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(empty());
        }
        for ids in &inputs {
            self.check_ids(ids, param)?;
            let limit = self.limits.max_sequence_tokens();
            if ids.len() > limit {
                return Err(ValidationError::ContextLength {
                    message: format!(
                        "input has {} tokens > the limit of {limit} tokens (context {}, KV cache {})",
                        ids.len(),
                        self.limits.max_context,
                        self.limits.kv_capacity_tokens
                    ),
                    param,
                });
            }
        }
        Ok(ValidEmbedding { inputs, base64 })
    }
}

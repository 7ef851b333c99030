//! The engine at Llama 3.2's architecture, on tiny generated GGUFs (`novapay synth-gguf`): logits equal
//! llama.cpp's on the committed fixture (Q4_K, Q6_K, Q8_0 weights), the generator is byte-identical on
//! every run, and damaged files fail with errors naming the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use novapay::engine::arch::Architecture;
use novapay::engine::inspect::{self, LogitsRequest};
use novapay::engine::llama::PrefillKernel;
use novapay::engine::synth::{self, Quant, Shape, SynthSpec};
use novapay::engine::tile_cache::TileCacheMode;
use novapay::engine::{EngineError, Llm, LlmOptions};
use sha2::{Digest, Sha256};

use crate::fixture;

const SEED: u64 = 7;

/// Each tiny model is generated once per test run, into the test binary's scratch directory.
fn tiny(quant: &str) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    made.entry(quant.to_string())
        .or_insert_with(|| {
            let path =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-{quant}-{SEED}.gguf"));
            let spec = SynthSpec {
                arch: Architecture::Llama,
                shape: Shape::TINY,
                quant: quant.parse::<Quant>().unwrap(),
                seed: SEED,
            };
            synth::write_synthetic_gguf(&spec, &path).expect("tiny model is written");
            path
        })
        .clone()
}

pub(super) fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn synthetic_gguf_is_byte_identical_on_every_run_and_to_the_fixture_model() {
    let fx = fixture("llama_cpp_parity.json");
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.gguf");
    let spec = SynthSpec {
        arch: Architecture::Llama,
        shape: Shape::TINY,
        quant: Quant::Q8_0,
        seed: SEED,
    };
    synth::write_synthetic_gguf(&spec, &again).unwrap();
    assert_eq!(sha256(&again), sha256(&tiny("q8_0")));
    for q in ["q4_k", "q6_k", "q8_0"] {
        assert_eq!(
            sha256(&tiny(q)),
            fx["models"][q]["sha256"].as_str().unwrap(),
            "{q}: the generator no longer makes the file llama.cpp's logits were taken on"
        );
    }
    let other_seed = dir.path().join("seed8.gguf");
    synth::write_synthetic_gguf(&SynthSpec { seed: 8, ..spec }, &other_seed).unwrap();
    assert_ne!(
        sha256(&other_seed),
        sha256(&again),
        "the seed changes the weights"
    );
}

#[test]
fn tokenizer_of_the_llama3_vocabulary_matches_llama_cpp() {
    let fx = fixture("llama_cpp_parity.json");
    let llm = Llm::load(&LlmOptions::new(tiny("q8_0"))).unwrap();
    let mut got = vec![llm.tokenizer.bos.expect("llama 3 has a BOS")];
    got.extend(
        llm.tokenizer
            .encode(fx["prompt"].as_str().unwrap(), true)
            .unwrap(),
    );
    let want = ids(&fx["ids"]);
    assert_eq!(&got[..want.len()], &want[..]);
}

/// Our logits against an exact float64 forward pass of the same file (numpy, in the fixture script):
/// the dense prefill that small models use has only f32 rounding left (measured: < 1e-4). Ignoring
/// the Llama 3 RoPE scaling moves these logits by 0.14, NeoX-style RoPE by 8.5 (measured with the
/// fixture script's reference), so a RoPE, GQA, norm or tied-output bug cannot hide under this bound.
/// The KV cache holds keys and values in f16, as llama.cpp's does: that rounding alone moves these
/// logits by up to 2.8e-3 (measured; 1.5e-5 with an f32 cache), 50x below the smallest bug above.
const EXACT_TOLERANCE: f32 = 5e-3;

/// llama.cpp quantizes every activation to Q8_0/Q8_K and keeps K/V in f16: on these logits (top values
/// ~7, spread ~1.6) it is itself up to 0.12 (Q8_0), 0.15 (Q6_K), 0.18 (Q4_K) away from exact arithmetic
/// (`llama_cpp_vs_reference_max_abs` in the fixture). candle's quantized kernels (the prefill of large
/// models) add noise of the same kind (0.15). Twice the worst of those bounds the honest difference.
const NOISY_TOLERANCE: f32 = 0.35;

/// Per position: argmax, top-1/top-2 margin, top-8 (id, logit), logits of the fixed ids.
type ExpectedPosition = (u32, f32, Vec<(u32, f32)>, Vec<f32>);

struct Expected {
    positions: Vec<ExpectedPosition>,
    greedy: Vec<u32>,
    greedy_margins: Vec<f32>,
}

fn expected(v: &serde_json::Value) -> Expected {
    let f = |x: &serde_json::Value| x.as_f64().unwrap() as f32;
    Expected {
        positions: v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["argmax"].as_u64().unwrap() as u32,
                    f(&p["margin"]),
                    p["top"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| (t[0].as_u64().unwrap() as u32, f(&t[1])))
                        .collect(),
                    p["selected"].as_array().unwrap().iter().map(f).collect(),
                )
            })
            .collect(),
        greedy: ids(&v["greedy"]),
        greedy_margins: v["greedy_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect(),
    }
}

/// A side stored without a greedy continuation (the real 270M model's exact reference).
fn expected_positions(v: &serde_json::Value) -> Expected {
    let mut v = v.clone();
    for key in ["greedy", "greedy_margins"] {
        if v.get(key).is_none() {
            v[key] = serde_json::json!([]);
        }
    }
    expected(&v)
}

struct Ours {
    rows: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn run_ours(fx: &serde_json::Value, model: &Path, prefill: PrefillKernel) -> Ours {
    let tokens = ids(&fx["ids"]);
    let mut opts = LlmOptions::new(model.to_path_buf());
    opts.load.prefill = prefill;
    let mut llm = Llm::load(&opts).unwrap();
    let report = inspect::prompt_logits(
        &mut llm,
        &LogitsRequest {
            tokens: &tokens,
            top_k: 1,
            ids_of_interest: &[],
            greedy_tokens: 32,
        },
    )
    .unwrap();
    Ours {
        rows: llm.logits_all_positions(&tokens).unwrap(),
        greedy: report.greedy,
    }
}

/// Max |difference| at the expected top-8 ids and the fixed ids, and the positions where the argmax
/// differs although the expected top-1/top-2 margin exceeds `tie` (closer margins are ties within the
/// expected side's own noise).
fn compare(ours: &Ours, want: &Expected, select: &[u32], tie: f32) -> (f32, Vec<usize>) {
    let mut max_diff = 0f32;
    let mut wrong = Vec::new();
    for (p, (argmax, margin, top, selected)) in want.positions.iter().enumerate() {
        let row = &ours.rows[p];
        for (id, v) in top {
            max_diff = max_diff.max((row[*id as usize] - v).abs());
        }
        for (id, v) in select.iter().zip(selected) {
            max_diff = max_diff.max((row[*id as usize] - v).abs());
        }
        if inspect::argmax(row) != *argmax && *margin > tie {
            wrong.push(p);
        }
    }
    (max_diff, wrong)
}

/// Greedy tokens equal up to the first step where the expected side had a near-tie.
fn greedy_prefix_matches(ours: &Ours, want: &Expected, tie: f32) -> bool {
    for (i, (a, b)) in ours.greedy.iter().zip(&want.greedy).enumerate() {
        if want.greedy_margins[i] <= tie {
            return true; // a near-tie: either choice is right, and later steps follow from it
        }
        if a != b {
            return false;
        }
    }
    true
}

/// `model` with the `prefill` kernel against one side of a fixture entry (`entry` holds the prompt's
/// `ids`, and `llama_cpp` / `reference` as the fixture scripts store them): the max |difference| at the
/// compared ids and the positions whose argmax differs although that side's top-1/top-2 margin
/// exceeds `tie`.
pub(super) fn diff_from(
    entry: &serde_json::Value,
    side: &str,
    select: &[u32],
    model: &Path,
    prefill: PrefillKernel,
    tie: f32,
) -> (f32, Vec<usize>) {
    let ours = run_ours(entry, model, prefill);
    compare(&ours, &expected_positions(&entry[side]), select, tie)
}

fn check_parity(quant: &str) {
    check_parity_of(&fixture("llama_cpp_parity.json"), quant, &tiny(quant));
}

/// `model` (the file the fixture's `quant` entry was made from) against the fixture's exact reference
/// and llama.cpp's logits.
pub(super) fn check_parity_of(fx: &serde_json::Value, quant: &str, model: &Path) {
    let select = ids(&fx["select"]);
    let entry = &fx["models"][quant];
    let reference = expected(&entry["reference"]);
    let llama = expected(&entry["llama_cpp"]);

    // The dense prefill (f32 GEMM on dequantized weights) against exact arithmetic: every argmax and
    // the whole greedy continuation identical. (Not the default: its rows depend on the batch.)
    let ours = run_ours(fx, model, PrefillKernel::Dense);
    let (diff, wrong) = compare(&ours, &reference, &select, 0.0);
    eprintln!("{quant}: novapay vs exact reference: max |diff| {diff:.6}");
    assert!(
        diff <= EXACT_TOLERANCE,
        "{quant}: max |diff| {diff} vs exact reference"
    );
    assert!(
        wrong.is_empty(),
        "{quant}: argmax differs from the exact reference at {wrong:?}"
    );
    // Generation decodes with the quantized mat-vec kernel (activations quantized, like llama.cpp), so
    // its greedy tokens follow the reference up to the first near-tie; the continuation itself is
    // checked exactly by teacher forcing: the reference's 32 greedy tokens appended to the prompt and
    // run in one pass give the reference's choices at every step.
    assert!(
        greedy_prefix_matches(&ours, &reference, NOISY_TOLERANCE),
        "{quant}: greedy vs reference"
    );
    let fx_ids = ids(&fx["ids"]);
    let forced: Vec<u32> = fx_ids
        .iter()
        .chain(&reference.greedy[..31])
        .copied()
        .collect();
    let mut dense = LlmOptions::new(model.to_path_buf());
    dense.load.prefill = PrefillKernel::Dense;
    let mut llm = Llm::load(&dense).unwrap();
    let rows = llm.logits_all_positions(&forced).unwrap();
    for (step, want) in reference.greedy.iter().enumerate() {
        let row = &rows[fx_ids.len() - 1 + step];
        if reference.greedy_margins[step] > EXACT_TOLERANCE {
            assert_eq!(
                inspect::argmax(row),
                *want,
                "{quant}: teacher-forced step {step}"
            );
        }
    }
    // The incremental decode path (KV cache, one token at a time) on the same tokens stays within the
    // quantized kernels' noise of the one-pass logits.
    llm.logits_all_positions(&fx_ids).unwrap();
    let mut worst = 0f32;
    for (step, tok) in reference.greedy[..31].iter().enumerate() {
        let row = llm.logits_next(*tok).unwrap();
        let dense = &rows[fx_ids.len() + step];
        for (a, b) in row.iter().zip(dense) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("{quant}: decode path vs one-pass logits: max |diff| {worst:.4}");
    assert!(
        worst <= NOISY_TOLERANCE,
        "{quant}: decode path max |diff| {worst}"
    );

    // Against llama.cpp itself: within its own noise, same argmax wherever it is not a near-tie.
    let (diff, wrong) = compare(&ours, &llama, &select, NOISY_TOLERANCE);
    eprintln!("{quant}: novapay vs llama.cpp: max |diff| {diff:.4}");
    assert!(
        diff <= NOISY_TOLERANCE,
        "{quant}: max |diff| {diff} vs llama.cpp"
    );
    assert!(
        wrong.is_empty(),
        "{quant}: argmax differs from llama.cpp at {wrong:?}"
    );
    assert!(
        greedy_prefix_matches(&ours, &llama, NOISY_TOLERANCE),
        "{quant}: greedy vs llama.cpp"
    );

    // The quantized prefill kernel (the default) has llama.cpp-like noise, no more.
    let quantized = run_ours(fx, model, PrefillKernel::Auto);
    let (diff, wrong) = compare(&quantized, &reference, &select, NOISY_TOLERANCE);
    eprintln!("{quant}: quantized prefill vs exact reference: max |diff| {diff:.4}");
    assert!(
        diff <= NOISY_TOLERANCE,
        "{quant}: quantized prefill max |diff| {diff}"
    );
    assert!(
        wrong.is_empty(),
        "{quant}: quantized prefill argmax differs at {wrong:?}"
    );
}

#[test]
fn llama3_logits_match_reference_and_llama_cpp_q4_k() {
    check_parity("q4_k");
}

#[test]
fn llama3_logits_match_reference_and_llama_cpp_q6_k() {
    check_parity("q6_k");
}

#[test]
fn llama3_logits_match_reference_and_llama_cpp_q8_0() {
    check_parity("q8_0");
}

#[test]
fn follow_up_reuses_the_cached_prefix_and_gives_the_same_answer() {
    let mut llm = Llm::load(&LlmOptions::new(tiny("q8_0"))).unwrap();
    let fx = fixture("llama_cpp_parity.json");
    let prompt = ids(&fx["ids"]);
    let params = novapay::engine::SamplingParams {
        max_new_tokens: 8,
        ignore_eos: true,
        ..Default::default()
    };
    let run = |llm: &mut Llm, p: &[u32]| {
        let mut text = String::new();
        let s = llm
            .generate(p, &params, &|| false, &mut |t| {
                text.push_str(t);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        (text, s.usage.cached_prompt_tokens)
    };
    llm.forget();
    let (fresh, reused) = run(&mut llm, &prompt);
    assert_eq!(reused, 0);
    // Same system part, different end: only the new tail is computed, the answer is the one a fresh
    // cache gives.
    let mut other = prompt[..40].to_vec();
    other.extend(prompt[40..].iter().rev());
    let (with_cache, reused) = run(&mut llm, &other);
    assert_eq!(reused, 40, "the shared 40 tokens are reused");
    llm.forget();
    let (without_cache, _) = run(&mut llm, &other);
    assert_eq!(with_cache, without_cache);
    let (again, reused) = run(&mut llm, &prompt);
    assert_eq!(reused, 40);
    assert_eq!(again, fresh);
    // The same prompt again: all but the last token come from the cache where the kernels are
    // split-invariant (AVX-512 VNNI), all but the last 16 (one dense batch) elsewhere.
    let (same, reused) = run(&mut llm, &prompt);
    let tail = if novapay::engine::packed::available() {
        1
    } else {
        16
    };
    assert_eq!(reused, prompt.len() - tail);
    assert_eq!(same, fresh);
}

// ------------------------------------------------------------------------------------ determinism

/// Llama 3.2 3B's architecture scaled down: GQA 3:1 with head_dim 128, llama.cpp's Q4_K_M mix (Q4_K,
/// Q6_K for attn_v / ffn_down and the tied embedding), widths our packed kernels take.
fn scaled_q4_k_m() -> PathBuf {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scaled-q4_k_m-{SEED}.gguf"));
        let spec = SynthSpec {
            arch: Architecture::Llama,
            shape: Shape {
                n_layer: 2,
                hidden: 768,
                n_head: 6,
                n_kv_head: 2,
                ffn: 2048,
                head_dim_override: None,
                sliding_window: None,
            },
            quant: Quant::Q4KM,
            seed: SEED,
        };
        synth::write_synthetic_gguf(&spec, &path).expect("scaled model is written");
        path
    })
    .clone()
}

/// The fixture's prompt twice over (~100 tokens), and another that shares its first 20 tokens.
fn synthetic_pair() -> (Vec<u32>, Vec<u32>) {
    let fx = fixture("llama_cpp_parity.json");
    let once = ids(&fx["ids"]);
    let prompt: Vec<u32> = once.iter().chain(&once[1..]).copied().collect();
    let mut other = prompt[..20].to_vec();
    other.extend(prompt[20..].iter().rev().take(30));
    (prompt, other)
}

#[test]
fn q4_k_m_prompt_logits_do_not_depend_on_how_the_prompt_is_split() {
    if !crate::engine::generation::split_invariance_guaranteed() {
        return;
    }
    let mut llm = Llm::load(&LlmOptions::new(scaled_q4_k_m())).unwrap();
    let types = &llm.config().weight_types;
    assert!(types.contains("Q4K") && types.contains("Q6K"), "{types}");
    let (prompt, other) = synthetic_pair();
    crate::engine::generation::assert_logits_independent_of_the_split(&mut llm, &prompt, &other);
}

#[test]
fn q4_k_m_same_prompt_gives_the_same_greedy_tokens_whatever_ran_before() {
    if !crate::engine::generation::split_invariance_guaranteed() {
        return;
    }
    let (prompt, other) = synthetic_pair();
    crate::engine::generation::assert_answer_independent_of_history(
        &LlmOptions::new(scaled_q4_k_m()),
        &prompt,
        &other,
    );
}

#[test]
fn q4_k_m_logits_are_the_same_on_one_and_two_threads() {
    if !crate::engine::generation::split_invariance_guaranteed() {
        return;
    }
    let (prompt, _) = synthetic_pair();
    crate::engine::generation::assert_same_on_one_and_two_threads(
        &LlmOptions::new(scaled_q4_k_m()),
        &prompt,
    );
}

// ---------------------------------------------------------------- damaged files

/// Rewrites a GGUF with edited metadata and tensors.
pub(super) fn rewrite(
    src: &Path,
    dst: &Path,
    edit_meta: impl FnOnce(&mut Vec<(String, Value)>),
    edit_tensors: impl FnOnce(&mut Vec<(String, QTensor)>),
) {
    let mut f = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut meta: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            let t = content.tensor(&mut f, &n, &Device::Cpu).unwrap();
            (n, t)
        })
        .collect();
    edit_meta(&mut meta);
    edit_tensors(&mut tensors);
    let mut out = std::fs::File::create(dst).unwrap();
    let m: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &m, &t).unwrap();
}

pub(super) fn load_err(path: &Path) -> String {
    let err = match Llm::load(&LlmOptions::new(path.to_path_buf())) {
        Ok(_) => panic!("{} must not load", path.display()),
        Err(e) => e,
    };
    assert!(matches!(err, EngineError::BadModel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    msg
}

#[test]
fn tensor_with_the_wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong-shape.gguf");
    rewrite(
        &tiny("q8_0"),
        &path,
        |_| {},
        |tensors| {
            let t = tensors
                .iter_mut()
                .find(|(n, _)| n == "blk.1.attn_k.weight")
                .unwrap();
            // 256 rows instead of the 128 one KV head of 128 dims needs.
            let w = candle_core::Tensor::zeros((256, 256), candle_core::DType::F32, &Device::Cpu)
                .unwrap();
            t.1 = QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0).unwrap();
        },
    );
    let msg = load_err(&path);
    assert!(
        msg.contains("blk.1.attn_k.weight") && msg.contains("[256, 256]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.gguf");
    rewrite(
        &tiny("q8_0"),
        &path,
        |_| {},
        |tensors| tensors.retain(|(n, _)| n != "blk.1.ffn_down.weight"),
    );
    let msg = load_err(&path);
    assert!(msg.contains("blk.1.ffn_down.weight"), "{msg}");
}

/// Another family (a state-space model, an encoder) is refused from the header, naming the families
/// that run, before its tokenizer is built or a weight is read: the BERT-style file's `bert`
/// vocabulary, which the tokenizer would refuse with a less telling error, is never reached.
#[test]
fn unsupported_architecture_is_refused_naming_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["mamba", "bert"] {
        let path = dir.path().join(format!("{arch}.gguf"));
        rewrite(
            &tiny("q8_0"),
            &path,
            |meta| {
                for (k, v) in meta.iter_mut() {
                    if k == "general.architecture" {
                        *v = Value::String(arch.into());
                    }
                    if k == "tokenizer.ggml.model" && arch == "bert" {
                        *v = Value::String("bert".into());
                    }
                }
            },
            |_| {},
        );
        let msg = load_err(&path);
        assert!(
            msg.contains(&format!("architecture `{arch}` is not supported"))
                && msg.contains("llama, qwen2, gemma3"),
            "{msg}"
        );
    }
}

#[test]
fn tokenizer_that_does_not_match_the_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    rewrite(
        &tiny("q8_0"),
        &path,
        |meta| {
            for (k, v) in meta.iter_mut() {
                if k == "tokenizer.ggml.tokens" || k == "tokenizer.ggml.token_type" {
                    if let Value::Array(a) = v {
                        a.truncate(synth::VOCAB - 1000);
                    }
                }
            }
        },
        |_| {},
    );
    let msg = load_err(&path);
    assert!(
        msg.contains("token_embd.weight") && msg.contains("127256 tokens"),
        "{msg}"
    );
}

/// Patches the GGML type of `tensor` in the header to an id candle does not know (39 = MXFP4).
fn with_unknown_type(src: &Path, dst: &Path, tensor: &str) {
    let mut bytes = std::fs::read(src).unwrap();
    let name = tensor.as_bytes();
    let at = bytes
        .windows(name.len() + 8)
        .position(|w| w[8..] == *name && w[..8] == (name.len() as u64).to_le_bytes())
        .expect("tensor name in header")
        + 8
        + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    bytes[ty..ty + 4].copy_from_slice(&39u32.to_le_bytes());
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn unknown_quant_type_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("type.gguf");
    with_unknown_type(&tiny("q8_0"), &path, "blk.0.ffn_up.weight");
    let msg = load_err(&path);
    assert!(
        msg.contains("blk.0.ffn_up.weight") && msg.contains("type 39"),
        "{msg}"
    );
}

#[test]
fn truncated_or_scrambled_generated_files_fail_cleanly() {
    let real = std::fs::read(tiny("q4_k")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for len in [100usize, 600_000, real.len() - 10] {
        let path = dir.path().join(format!("cut-{len}.gguf"));
        std::fs::write(&path, &real[..len]).unwrap();
        let msg = load_err(&path);
        assert!(
            msg.contains("truncated") || msg.contains("corrupt"),
            "{len}: {msg}"
        );
    }
    // Header bytes overwritten (counts, lengths, types): an error, never a panic or a huge allocation.
    let mut state = 1u64;
    for round in 0..40 {
        let mut bytes = real.clone();
        for _ in 0..4 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = 4 + (state >> 33) as usize % 4000;
            bytes[at] = (state >> 13) as u8;
        }
        let path = dir.path().join(format!("scrambled-{round}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        // Some scrambles only touch a string and still load; none may panic.
        let _ = Llm::load(&LlmOptions::new(path));
    }
}

// ---------------------------------------------------------------- tile cache

fn load_with_tile_cache(gguf: &Path, dir: &Path) -> (String, Vec<Vec<f32>>) {
    let mut opts = LlmOptions::new(gguf.to_path_buf());
    opts.load.tile_cache = TileCacheMode::Dir(dir.to_path_buf());
    let mut llm = Llm::load(&opts).unwrap();
    let logits = llm
        .logits_all_positions(&[128000, 9906, 11, 1917, 0, 358, 1097, 264])
        .unwrap();
    (llm.config().tile_cache.clone(), logits)
}

fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one cache file, no temporary left: {files:?}"
    );
    files[0].clone()
}

#[test]
fn tile_cache_is_mapped_on_later_loads_and_rebuilt_when_stale_or_damaged() {
    if !novapay::engine::packed::available() {
        eprintln!("no AVX-512 VNNI on this CPU: nothing is packed, nothing cached");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("tiles");
    let gguf = work.path().join("model.gguf");
    std::fs::copy(tiny("q4_k"), &gguf).unwrap();
    let mut plain = LlmOptions::new(gguf.clone());
    plain.load.tile_cache = TileCacheMode::Off;
    let want = Llm::load(&plain)
        .unwrap()
        .logits_all_positions(&[128000, 9906, 11, 1917, 0, 358, 1097, 264])
        .unwrap();
    assert!(!cache.exists(), "off writes nothing");

    let (status, got) = load_with_tile_cache(&gguf, &cache);
    assert!(status.starts_with("written"), "{status}");
    assert_eq!(got, want);
    let file = cache_file(&cache);
    let (status, got) = load_with_tile_cache(&gguf, &cache);
    assert!(status.starts_with("mapped"), "{status}");
    assert_eq!(got, want, "mapped tiles give the same logits bit for bit");

    // Damaged: a truncated file, a scrambled entry table, a wrong magic. Each is rebuilt.
    let good = std::fs::read(&file).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("entry table", {
            let mut b = good.clone();
            // The first entry's name, tile type and rows (entries start at byte 56).
            b[60..90].iter_mut().for_each(|x| *x ^= 0x5a);
            b
        }),
        ("magic", {
            let mut b = good.clone();
            b[0] = b'X';
            b
        }),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&file, &bytes).unwrap();
        let (status, got) = load_with_tile_cache(&gguf, &cache);
        assert!(status.starts_with("written"), "{what}: {status}");
        assert_eq!(got, want, "{what}");
        assert_eq!(std::fs::read(cache_file(&cache)).unwrap(), good, "{what}");
    }

    // Stale: the GGUF replaced in place by another with the same header and size (another seed),
    // even with the old modification time put back (the cache does not compare it): the data samples
    // differ, the cache is rebuilt.
    let mtime = std::fs::metadata(&gguf).unwrap().modified().unwrap();
    let other = work.path().join("other.gguf");
    let spec = SynthSpec {
        arch: Architecture::Llama,
        shape: Shape::TINY,
        quant: Quant::Q4K,
        seed: SEED + 1,
    };
    synth::write_synthetic_gguf(&spec, &other).unwrap();
    std::fs::copy(&other, &gguf).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&gguf)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    plain.gguf = gguf.clone();
    let want_other = Llm::load(&plain)
        .unwrap()
        .logits_all_positions(&[128000, 9906, 11, 1917, 0, 358, 1097, 264])
        .unwrap();
    assert_ne!(want_other, want);
    let (status, got) = load_with_tile_cache(&gguf, &cache);
    assert!(status.starts_with("written"), "{status}");
    assert_eq!(got, want_other, "never the old model's tiles");

    // A cache directory that cannot be created: the load works, repacking as without a cache.
    let blocked = work.path().join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let (status, got) = load_with_tile_cache(&gguf, &blocked.join("tiles"));
    assert!(status.starts_with("not written"), "{status}");
    assert_eq!(got, want_other);
}

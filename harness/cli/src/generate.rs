//! `moebench generate` (greedy continuation) and `moebench logits` (the parity/debug tool:
//! prompt ids and the top-K log-softmax entries of the last position).
use crate::common::ModelArgs;
use anyhow::Result;
use moebench_model::generate::{greedy_batch, StopOnIds};
use tch::{Kind, Tensor};

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Keep generating past the tokenizer's EOS token.
    #[arg(long)]
    ignore_eos: bool,
}

#[derive(clap::Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 10)]
    top: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let tokenizer = loaded.tokenizer()?;
    let ids = tokenizer.encode(&args.prompt, true)?;
    let stop: Vec<i64> = if args.ignore_eos {
        vec![]
    } else {
        tokenizer.eos_id.into_iter().collect()
    };
    let out = greedy_batch(
        &loaded.model,
        &[ids],
        args.max_new_tokens,
        &mut StopOnIds(stop),
    );
    let text = tokenizer.decode(&out[0], false)?;
    println!("{}{}", args.prompt, text);
    Ok(())
}

pub fn run_logits(args: LogitsArgs) -> Result<()> {
    let _g = tch::no_grad_guard();
    let loaded = args.model.load()?;
    let tokenizer = loaded.tokenizer()?;
    let ids = tokenizer.encode(&args.prompt, true)?;
    anyhow::ensure!(
        !ids.is_empty(),
        "the prompt encodes to no tokens; give a non-empty --prompt"
    );
    let input = Tensor::from_slice(&ids)
        .view([1, -1])
        .to_device(loaded.model.device);
    let logits = loaded.model.forward(&input, None, None);
    let last = logits
        .get(0)
        .get(ids.len() as i64 - 1)
        .log_softmax(-1, Kind::Float);
    let (values, indices) = last.topk(args.top, -1, true, true);
    let values: Vec<f32> = Vec::try_from(values.to_device(tch::Device::Cpu))?;
    let indices: Vec<i64> = Vec::try_from(indices.to_device(tch::Device::Cpu))?;
    let top: Vec<serde_json::Value> = indices
        .iter()
        .zip(&values)
        .map(|(&id, &lp)| {
            serde_json::json!({"id": id, "token": tokenizer.id_to_token(id), "logprob": lp})
        })
        .collect();
    if args.json {
        let report = serde_json::json!({
            "model": loaded.checkpoint.reference,
            "commit": loaded.checkpoint.commit,
            "input_ids": ids,
            "top": top,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("input_ids {ids:?}");
        for t in &top {
            println!(
                "{:>8} {:>12.6} {}",
                t["id"],
                t["logprob"].as_f64().unwrap_or(f64::NAN),
                t["token"]
            );
        }
    }
    Ok(())
}

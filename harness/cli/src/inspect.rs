//! `moebench inspect MODEL`: what a checkpoint is and what a token costs.
use crate::common::ModelArgs;
use anyhow::Result;
use moebench_model::cost::{flops_per_token, param_counts};
use moebench_model::Ffn;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Context length (positions attended) for the attention FLOPs.
    #[arg(long, default_value_t = 1)]
    context: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let m = &loaded.model;
    let c = &m.config;
    let params = param_counts(m, None);
    let flops = flops_per_token(m, args.context, None);
    let moe_layers: Vec<usize> = m
        .layers
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b.ffn, Ffn::Moe(_)))
        .map(|(l, _)| l)
        .collect();
    let selectors: Vec<String> = m
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(moe) => Some(moe.selector.describe()),
            Ffn::Dense(_) => None,
        })
        .collect();
    let report = serde_json::json!({
        "model": loaded.checkpoint.reference,
        "repo_id": loaded.checkpoint.repo_id,
        "commit": loaded.checkpoint.commit,
        "family": c.family.model_type(),
        "layers": c.num_layers,
        "hidden_size": c.hidden_size,
        "heads": c.num_heads,
        "kv_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "tied_embeddings": c.tie_word_embeddings,
        "moe_layers": moe_layers,
        "experts": c.moe.as_ref().map(|x| x.num_experts),
        "top_k": c.moe.as_ref().map(|x| x.top_k),
        "router": selectors.first(),
        "params": params,
        "flops_per_token": flops,
        "flops_context": args.context,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model        {}", loaded.checkpoint.reference);
    println!(
        "commit       {}",
        loaded
            .checkpoint
            .commit
            .as_deref()
            .unwrap_or("(local directory)")
    );
    println!(
        "family       {} ({} layers, hidden {}, {} heads / {} kv, head_dim {}, vocab {})",
        c.family.model_type(),
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size
    );
    if let Some(moe) = &c.moe {
        println!(
            "moe          {} experts, top-{}, {} of {} layers sparse, router {}",
            moe.num_experts,
            moe.top_k,
            moe_layers.len(),
            c.num_layers,
            selectors.first().map(String::as_str).unwrap_or("-")
        );
    }
    println!(
        "params       {:.3} M total, {:.3} M active per token",
        params.total as f64 / 1e6,
        params.active_per_token / 1e6
    );
    println!(
        "flops/token  {:.3} MFLOP at context {} (attention {:.3}, mlp/experts {:.3}, lm_head {:.3})",
        flops.total / 1e6,
        args.context,
        (flops.attention_projections + flops.attention_context) / 1e6,
        (flops.dense_mlp + flops.experts + flops.shared_experts + flops.router) / 1e6,
        flops.lm_head / 1e6
    );
    Ok(())
}

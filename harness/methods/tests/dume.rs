//! DUME (arXiv 2603.29765, docs/methods.md §2, §8.8) and its baselines on tiny random models.
use moebench_methods::dume::{
    add_expert, average_merge, btx, dume, dume_plus, moerge, oracle_logits, oracle_routing,
    random_routing, router_accuracy, Batch, BtxConfig, BtxVariant, DumeConfig, DumePlusConfig,
};
use moebench_methods::scratch::{random_model, ScratchConfig};
use moebench_methods::train::{tagged_parameters, Module, TrainConfig, Trainable};
use moebench_model::save::save_pretrained;
use moebench_model::{Family, Ffn, Model};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global and the tests seed it (`manual_seed`) to build identical
/// models twice; running them one at a time keeps other tests from drawing in between.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fixture_llama() -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/llama");
    Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

fn tiny(seed: i64, intermediate_size: usize) -> ScratchConfig {
    ScratchConfig {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 1,
        intermediate_size,
        vocab_size: 128,
        num_experts: 0,
        seed,
        ..ScratchConfig::default()
    }
}

/// A random dense base (seed 0) whose MLPs are replaced by fresh random ones (seed
/// `mlp_seed`): "fine-tunes" of one base that differ only in their MLPs, so every MoErge of
/// them has the same shared weights.
fn mlp_variant(dir: &Path, mlp_seed: i64) -> Model {
    let model = random_model(&tiny(0, 16), &dir.join(format!("base-{mlp_seed}"))).unwrap();
    tch::manual_seed(mlp_seed);
    tch::no_grad(|| {
        for block in &model.layers {
            let Ffn::Dense(mlp) = &block.ffn else {
                unreachable!("dense")
            };
            for lin in [&mlp.gate, &mlp.up, &mlp.down] {
                let mut w = lin.weight.shallow_clone();
                w.copy_(&(w.randn_like() * 0.2));
            }
        }
    });
    model
}

/// A batch of token ids drawn from `[lo, lo + 8)` (a synthetic "domain"); the last 4 positions
/// of row 0 are padding holding ids of another range, which must not enter the statistics.
fn domain_batch(lo: i64, seed: i64) -> Batch {
    tch::manual_seed(seed);
    let ids = Tensor::randint_low(lo, lo + 8, [4, 16], (Kind::Int64, Device::Cpu));
    let mask = ids.ones_like();
    let _ = mask.get(0).narrow(0, 12, 4).fill_(0);
    let _ = ids.get(0).narrow(0, 12, 4).fill_((lo + 64) % 128);
    (ids, mask)
}

fn domain_batches(lo: i64, seed: i64, n: i64) -> Vec<Batch> {
    (0..n).map(|i| domain_batch(lo, seed * 100 + i)).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn routers(model: &Model) -> Vec<(Tensor, Tensor)> {
    model
        .layers
        .iter()
        .map(|b| match &b.ffn {
            Ffn::Moe(m) => (
                m.router.weight.shallow_clone(),
                m.router.bias.as_ref().unwrap().shallow_clone(),
            ),
            Ffn::Dense(_) => panic!("every layer is MoE after MoErging"),
        })
        .collect()
}

/// §2.3 step 6: adding the third expert later, with only its own domain's batches, gives the
/// same routers (and logits) as running DUME on all three domains at once.
#[test]
fn adding_an_expert_later_equals_collecting_all_domains_at_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let models = |n: i64| {
        (1..=n)
            .map(|s| mlp_variant(dir.path(), s))
            .collect::<Vec<_>>()
    };
    let data: Vec<Vec<Batch>> = [0, 40, 80]
        .iter()
        .enumerate()
        .map(|(d, &lo)| domain_batches(lo, d as i64, 2))
        .collect();
    let cfg = DumeConfig::default();
    let (all_at_once, stats3) = dume(models(3), &data, &cfg).unwrap();
    let (mut grown, mut stats) = dume(models(2), &data[..2], &cfg).unwrap();
    assert_eq!(stats.num_domains(), 2);
    let new = models(3).pop().unwrap();
    let domain = add_expert(&mut grown, &mut stats, &new, &data[2], &cfg).unwrap();
    assert_eq!(domain, 2);
    assert_eq!(grown.config.moe.as_ref().unwrap().num_experts, 3);
    for d in 0..3 {
        assert_eq!(stats.tokens(d), stats3.tokens(d));
        assert_eq!(
            stats.tokens(d),
            (4 * 16 - 4) as f64 * 2.0,
            "padding is masked"
        );
    }
    for ((w1, b1), (w3, b3)) in routers(&grown).iter().zip(&routers(&all_at_once)) {
        assert_eq!(w1.size(), [3, 32]);
        let diff = max_abs_diff(w1, w3).max(max_abs_diff(b1, b3));
        assert!(diff <= 1e-6, "router max |Δ| {diff}");
    }
    let (ids, mask) = &data[1][0];
    let diff = max_abs_diff(
        &grown.forward(ids, Some(mask), None),
        &all_at_once.forward(ids, Some(mask), None),
    );
    assert!(diff <= 1e-5, "logits max |Δ| {diff}");
}

/// docs/methods.md §8.8: oracle routing with D identical models equals the dense model, and
/// MoErging identical models keeps their weights (the averages equal the originals).
#[test]
fn identical_copies_keep_the_weights_and_oracle_routing_equals_dense() {
    let _serial = serial();
    let dense = fixture_llama();
    let merged = moerge((0..3).map(|_| fixture_llama()).collect()).unwrap();
    assert_eq!(merged.config.family, Family::Mixtral);
    let (original, merged_tensors) = (dense.named_tensors(), merged.named_tensors());
    let mut shared = 0;
    for (name, t) in &original {
        if name.contains(".mlp.") {
            continue;
        }
        assert!(t.equal(&merged_tensors[name]), "{name} changed");
        shared += 1;
    }
    assert!(shared >= 10, "only {shared} shared tensors compared");
    for (l, block) in merged.layers.iter().enumerate() {
        let (Ffn::Moe(moe), Ffn::Dense(mlp)) = (&block.ffn, &dense.layers[l].ffn) else {
            panic!("layer {l}: MoE expected in the merged model, dense in the original")
        };
        for e in 0..3 {
            assert!(moe.w_gate.get(e).equal(&mlp.gate.weight));
            assert!(moe.w_down.get(e).equal(&mlp.down.weight));
        }
    }
    let averaged = average_merge((0..3).map(|_| fixture_llama()).collect()).unwrap();
    for (name, t) in averaged.named_tensors() {
        assert!(t.equal(&original[&name]), "{name} changed by averaging");
    }

    let ids = Tensor::from_slice(&[3i64, 17, 42, 99, 5, 64, 7, 1, 120, 33]).view([2, 5]);
    let mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 5]);
    let expected = tch::no_grad(|| dense.forward(&ids, Some(&mask), None));
    for d in 0..3 {
        let got = oracle_logits(&merged, &ids, Some(&mask), d).unwrap();
        let diff = max_abs_diff(&got, &expected);
        assert!(diff <= 1e-5, "oracle expert {d}: max |Δ| {diff}");
    }
}

/// MoErging different models: shared weights are the element-wise mean, expert d is model d's MLP.
#[test]
fn moerge_averages_shared_weights_and_stacks_the_mlps() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let load = |seed| random_model(&tiny(seed, 16), &dir.path().join(format!("m{seed}"))).unwrap();
    let (a, b) = (load(1), load(2));
    let (ta, tb) = (a.named_tensors(), b.named_tensors());
    let (mlp_a, mlp_b) = match (&a.layers[1].ffn, &b.layers[1].ffn) {
        (Ffn::Dense(x), Ffn::Dense(y)) => (x.up.weight.copy(), y.up.weight.copy()),
        _ => unreachable!("dense"),
    };
    let merged = moerge(vec![load(1), load(2)]).unwrap();
    let tm = merged.named_tensors();
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.q_proj.weight",
    ] {
        let mean = (&ta[name] + &tb[name]) / 2.0;
        assert!(max_abs_diff(&tm[name], &mean) < 1e-7, "{name}");
    }
    let Ffn::Moe(moe) = &merged.layers[1].ffn else {
        panic!("MoE expected")
    };
    assert!(moe.w_up.get(0).equal(&mlp_a) && moe.w_up.get(1).equal(&mlp_b));
    assert_eq!(moe.selector.describe(), "topk(k=1,renorm)");
    assert_eq!(
        f64::try_from(moe.router.weight.abs().sum(Kind::Double)).unwrap(),
        0.0
    );
}

/// Two synthetic domains (disjoint token ranges): the ridge router sends ≥ 90% of each domain's
/// tokens to its own expert in every layer, while random routing is near chance. The DUME model
/// cannot be saved (its router bias has no Mixtral slot) and says so; MoErged and BTX models
/// round-trip through `save_pretrained` with identical logits.
#[test]
fn ridge_router_separates_two_synthetic_domains() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let load = |seed| random_model(&tiny(seed, 16), &dir.path().join(format!("m{seed}"))).unwrap();
    let train: Vec<Vec<Batch>> = vec![domain_batches(0, 1, 3), domain_batches(64, 2, 3)];
    let held_out: Vec<Vec<Batch>> = vec![domain_batches(0, 3, 2), domain_batches(64, 4, 2)];
    let (mut model, stats) = dume(vec![load(1), load(2)], &train, &DumeConfig::default()).unwrap();
    assert_eq!(stats.num_domains(), 2);
    for (split, data) in [("train", &train), ("held-out", &held_out)] {
        let acc = router_accuracy(&model, data).unwrap();
        assert_eq!(acc.layers.len(), 2);
        for (layer, per_domain) in &acc.layers {
            assert!(
                per_domain.iter().all(|&a| a >= 0.9),
                "{split} layer {layer}: accuracy {per_domain:?}"
            );
        }
    }

    // Mixtral checkpoints have no router bias (and it cannot be folded into the weight: the MoE
    // input is RMS-normalised), so saving the DUME model is refused and writes nothing.
    let out = dir.path().join("dume");
    let err = save_pretrained(&model, None, &out).unwrap_err().to_string();
    assert!(
        err.contains("routers have a bias") && err.contains("cannot hold"),
        "{err}"
    );
    assert!(!out.exists());

    random_routing(&mut model, 1, 5).unwrap();
    let acc = router_accuracy(&model, &held_out).unwrap();
    for per_domain in acc.layers.values() {
        assert!(
            per_domain.iter().all(|&a| (0.3..=0.7).contains(&a)),
            "{per_domain:?}"
        );
    }

    let cfg = BtxConfig {
        train: TrainConfig {
            steps: 3,
            batch_size: 2,
            seq_len: 8,
            warmup_steps: 1,
            ..BtxConfig::default().train
        },
        ..BtxConfig::default()
    };
    let texts: Vec<Vec<i64>> = train
        .iter()
        .map(|d| Vec::<i64>::try_from(d[0].0.get(1)).unwrap())
        .collect();
    let mut steps = 0;
    let btx_model = btx(vec![load(1), load(2)], &texts, &cfg, &mut |_| steps += 1).unwrap();
    assert_eq!(steps, 3);
    let out = dir.path().join("btx");
    save_pretrained(&btx_model, None, &out).unwrap();
    let back = Model::load(&out, Device::Cpu, Kind::Float).unwrap();
    let (ids, mask) = &held_out[0][0];
    let diff = max_abs_diff(
        &back.forward(ids, Some(mask), None),
        &tch::no_grad(|| btx_model.forward(ids, Some(mask), None)),
    );
    assert!(diff < 1e-6, "max |Δ| {diff}");
}

#[test]
fn bad_inputs_are_named() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let err = moerge(Vec::new()).unwrap_err().to_string();
    assert!(err.contains("`dense_models` is empty"), "{err}");
    let load =
        |seed, f| random_model(&tiny(seed, f), &dir.path().join(format!("m{seed}-{f}"))).unwrap();
    let err = moerge(vec![load(1, 16), load(2, 24)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models 0 and 1 differ in architecture")
            && err.contains("[32, 24] Float in model 1 but [32, 16] Float in model 0"),
        "{err}"
    );
    let mixtral =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/mixtral");
    let moe = Model::load(&mixtral, Device::Cpu, Kind::Float).unwrap();
    let err = average_merge(vec![moe]).unwrap_err().to_string();
    assert!(err.contains("model 0 is already an MoE"), "{err}");

    let data = vec![domain_batches(0, 1, 1)];
    let err = dume(
        vec![load(1, 16), load(2, 16)],
        &data,
        &DumeConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`domain_batches` has 1 domains but there are 2"),
        "{err}"
    );

    let data = vec![domain_batches(0, 1, 1), domain_batches(64, 2, 1)];
    let (mut model, mut stats) = dume(
        vec![load(1, 16), load(2, 16)],
        &data,
        &DumeConfig::default(),
    )
    .unwrap();
    let (ids, mask) = &data[0][0];
    let err = oracle_logits(&model, ids, Some(mask), 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`domain` is 2, but there are 2"), "{err}");
    let err = add_expert(
        &mut model,
        &mut stats,
        &load(3, 24),
        &data[0],
        &DumeConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("layer 0: the new MLP [24, 32] does not fit"),
        "{err}"
    );
    let err = stats
        .add_domain_batch(&model, 0, ids, &mask.narrow(1, 0, 3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("must both be [B, T]"), "{err}");
}

/// Oracle routing sends every real token of domain d to expert d in every layer, so
/// `router_accuracy` is exactly 1 for that domain; the installed oracle computes the same
/// logits as forced routing at every real token.
#[test]
fn oracle_routing_has_router_accuracy_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let load = |seed| random_model(&tiny(seed, 16), &dir.path().join(format!("m{seed}"))).unwrap();
    let train: Vec<Vec<Batch>> = vec![domain_batches(0, 1, 2), domain_batches(64, 2, 2)];
    let held_out: Vec<Vec<Batch>> = vec![domain_batches(0, 3, 2), domain_batches(64, 4, 2)];
    let (mut model, _) = dume(vec![load(1), load(2)], &train, &DumeConfig::default()).unwrap();
    for d in 0..2 {
        let (ids, mask) = &held_out[d][0];
        let forced = oracle_logits(&model, ids, Some(mask), d as i64).unwrap();
        oracle_routing(&mut model, d as i64).unwrap();
        let installed = tch::no_grad(|| model.forward(ids, Some(mask), None));
        // Equal at real tokens; the installed oracle, like every selector, gives padding none.
        let real = mask.to_kind(Kind::Bool).unsqueeze(-1);
        assert!(
            installed
                .masked_select(&real)
                .equal(&forced.masked_select(&real)),
            "domain {d}"
        );
        let acc = router_accuracy(&model, &held_out).unwrap();
        assert_eq!(acc.layers.len(), 2);
        for per_domain in acc.layers.values() {
            assert_eq!(per_domain[d], 1.0, "domain {d}: {per_domain:?}");
            assert_eq!(per_domain[1 - d], 0.0, "the other domain: {per_domain:?}");
        }
    }
    let err = oracle_routing(&mut model, 2).unwrap_err().to_string();
    assert!(err.contains("`domain` is 2, but there are 2"), "{err}");
}

fn short(trainable: Trainable) -> TrainConfig {
    TrainConfig {
        steps: 3,
        batch_size: 2,
        seq_len: 8,
        lr: 1e-2,
        warmup_steps: 1,
        trainable,
        ..DumePlusConfig::default().train
    }
}

/// Which (module, changed) pairs training produced, comparing with a reference model.
fn changed(reference: &Model, trained: &Model) -> Vec<(Module, bool)> {
    tagged_parameters(reference)
        .into_iter()
        .zip(tagged_parameters(trained))
        .map(|(a, b)| (a.module, !a.tensor.equal(&b.tensor)))
        .collect()
}

/// DUME+ starts from the closed-form routers and trains only what it says: with the code's
/// "gate" selection the routers and gate projections move and nothing else does; router-only
/// leaves every expert weight bit-identical.
#[test]
fn dume_plus_trains_only_the_routers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let load = |seed| random_model(&tiny(seed, 16), &dir.path().join(format!("m{seed}"))).unwrap();
    let data: Vec<Vec<Batch>> = vec![domain_batches(0, 1, 2), domain_batches(64, 2, 2)];
    let texts: Vec<Vec<i64>> = data
        .iter()
        .map(|d| Vec::<i64>::try_from(d[0].0.get(1)).unwrap())
        .collect();
    let cfg = DumeConfig {
        top_k: 2,
        ..DumeConfig::default()
    };
    for (trainable, moving) in [
        (
            Trainable::routers_and_expert_gates(),
            vec![Module::Router, Module::ExpertGate],
        ),
        (Trainable::routers(), vec![Module::Router]),
    ] {
        let (reference, _) = dume(vec![load(1), load(2)], &data, &cfg).unwrap();
        let plus = DumePlusConfig {
            dume: cfg.clone(),
            train: short(trainable),
        };
        let mut steps = 0;
        let model = dume_plus(vec![load(1), load(2)], &data, &texts, &plus, &mut |_| {
            steps += 1
        })
        .unwrap();
        assert_eq!(steps, 3);
        for (module, moved) in changed(&reference, &model) {
            assert_eq!(moved, moving.contains(&module), "{module:?}");
        }
    }
}

/// BTX as DUME's baseline trains the (random) router and gate projections only; the full
/// variant (Sukhbaatar et al.) trains everything. Both start from the same MoErge.
#[test]
fn btx_variants_train_what_they_are_labelled() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let load = |seed| random_model(&tiny(seed, 16), &dir.path().join(format!("m{seed}"))).unwrap();
    let texts: Vec<Vec<i64>> = [0, 64]
        .iter()
        .map(|&lo| Vec::<i64>::try_from(domain_batch(lo, lo).0.get(1)).unwrap())
        .collect();
    assert_eq!(BtxConfig::default().label(), BtxVariant::RouterOnly);
    for variant in [BtxVariant::RouterOnly, BtxVariant::Full] {
        let base = BtxConfig::variant(variant);
        assert_eq!(base.label(), variant);
        let cfg = BtxConfig {
            train: short(base.train.trainable.clone()),
            ..base
        };
        let untrained = BtxConfig {
            train: TrainConfig {
                lr: 1e-30,
                ..cfg.train.clone()
            },
            ..cfg.clone()
        };
        // The same random router, trained with a vanishing learning rate: the reference.
        let reference = btx(vec![load(1), load(2)], &texts, &untrained, &mut |_| {}).unwrap();
        let model = btx(vec![load(1), load(2)], &texts, &cfg, &mut |_| {}).unwrap();
        let moved: Vec<Module> = changed(&reference, &model)
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(module, _)| module)
            .collect();
        match variant {
            BtxVariant::RouterOnly => assert!(
                moved
                    .iter()
                    .all(|m| [Module::Router, Module::ExpertGate].contains(m))
                    && moved.contains(&Module::ExpertGate),
                "{moved:?}"
            ),
            BtxVariant::Full => assert!(
                moved.contains(&Module::Attention) && moved.contains(&Module::Embeddings),
                "{moved:?}"
            ),
        }
    }
}

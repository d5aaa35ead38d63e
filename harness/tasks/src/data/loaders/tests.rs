//! Each loader on real rows of `shared/datasets/` (skipped, visibly, when it is absent).
use super::*;
use sha2::{Digest, Sha256};

/// `<repo>/../shared/datasets/<relative>`, or `None` (with a SKIPPED note) when absent.
fn shared(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is absent", path.display());
        None
    }
}

fn read(loader: Loader, relative: &[&str], name: Option<&str>) -> Option<Vec<Value>> {
    let files: Option<Vec<PathBuf>> = relative.iter().map(|r| shared(r)).collect();
    Some(loader.read(&files?, name, "test").unwrap().docs)
}

#[test]
fn ai2_arc() {
    let Some(docs) = read(Loader::Ai2ArcJsonl, &["arc_easy/ARC-Easy-Test.jsonl"], None) else {
        return;
    };
    assert_eq!(docs.len(), 2376);
    assert_eq!(
        docs[0],
        json!({
            "id": "Mercury_417466",
            "question": "Which statement best explains why photosynthesis is the foundation of most food webs?",
            "choices": {
                "text": ["Sunlight is the source of energy for nearly all ecosystems.",
                         "Most ecosystems are found on land instead of in water.",
                         "Carbon dioxide is more available than other gases.",
                         "The producers in all ecosystems are plants."],
                "label": ["A", "B", "C", "D"]
            },
            "answerKey": "A"
        })
    );
    let Some(challenge) = read(
        Loader::Ai2ArcJsonl,
        &["arc_challenge/ARC-Challenge-Test.jsonl"],
        None,
    ) else {
        return;
    };
    assert_eq!(challenge.len(), 1172);
}

#[test]
fn openbookqa() {
    let Some(docs) = read(Loader::OpenbookqaJsonl, &["openbookqa/test.jsonl"], None) else {
        return;
    };
    assert_eq!(docs.len(), 500);
    assert_eq!(docs[0]["id"], "8-343");
    assert!(docs[0]["question_stem"]
        .as_str()
        .unwrap()
        .starts_with("A person wants to start saving money"));
    assert_eq!(docs[0]["choices"]["text"][1], "quit eating lunch out");
    assert_eq!(docs[0]["answerKey"], "B");
    let keys: Vec<&String> = docs[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "question_stem", "choices", "answerKey"]);
}

#[test]
fn piqa() {
    let Some(docs) = read(
        Loader::PiqaJsonlLst,
        &["piqa/valid-labels.lst", "piqa/valid.jsonl"],
        None,
    ) else {
        return;
    };
    assert_eq!(docs.len(), 1838);
    assert_eq!(
        docs[0]["goal"],
        "How do I ready a guinea pig cage for it's new occupants?"
    );
    assert_eq!(docs[0]["label"], 0);
    assert_eq!(
        docs[1],
        json!({"goal": "dresser", "sol1": "replace drawer with bobby pin ",
                               "sol2": "finish, woodgrain with  bobby pin ", "label": 1})
    );
}

#[test]
fn winogrande() {
    let Some(docs) = read(
        Loader::WinograndeJsonlLst,
        &["winogrande/dev.jsonl", "winogrande/dev-labels.lst"],
        None,
    ) else {
        return;
    };
    assert_eq!(docs.len(), 1267);
    assert_eq!(
        docs[0],
        json!({"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
               "option1": "Sarah", "option2": "Maria", "answer": "2"})
    );
}

#[test]
fn superglue_boolq() {
    let Some(docs) = read(Loader::SuperglueBoolqJsonl, &["boolq/val.jsonl"], None) else {
        return;
    };
    assert_eq!(docs.len(), 3270);
    assert_eq!(
        docs[0]["question"],
        "does ethanol take more energy make that produces"
    );
    assert!(docs[0]["passage"]
        .as_str()
        .unwrap()
        .starts_with("Ethanol fuel -- All biomass"));
    assert_eq!(
        (docs[0]["idx"].clone(), docs[0]["label"].clone()),
        (json!(0), json!(0))
    );
    let trues = docs.iter().filter(|doc| doc["label"] == 1).count();
    assert_eq!(trues, 2033);
}

#[test]
fn hellaswag_llamacpp() {
    let Some(docs) = read(
        Loader::HellaswagLlamacppBz2,
        &["hellaswag/hellaswag_val_full.txt.bz2"],
        None,
    ) else {
        return;
    };
    assert_eq!(docs.len(), 10042);
    assert_eq!(
        docs[0],
        json!({"query": "Roof shingle removal: A man is sitting on a roof. he",
               "choices": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                           "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
               "label": 3})
    );
}

#[test]
fn mmlu_csv() {
    let Some(dev) = read(Loader::MmluCsv, &["mmlu/dev"], Some("abstract_algebra")) else {
        return;
    };
    assert_eq!(dev.len(), 5);
    assert_eq!(
        dev[0],
        json!({"question": "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.",
               "subject": "abstract_algebra", "choices": ["0", "1", "2", "3"], "answer": 1})
    );
    assert_eq!(dev[1]["choices"][0], "True, True");
    let Some(all) = read(Loader::MmluCsv, &["mmlu/test"], None) else {
        return;
    };
    assert_eq!(all.len(), 14042);
    let Some(file) = read(Loader::MmluCsv, &["mmlu/test/anatomy_test.csv"], None) else {
        return;
    };
    assert_eq!(file[0]["subject"], "anatomy");
}

#[test]
fn wikitext_tokens() {
    let Some(docs) = read(Loader::WikitextTokens, &["wikitext2/test.txt"], None) else {
        return;
    };
    let pages: Vec<&str> = docs
        .iter()
        .map(|doc| doc["page"].as_str().unwrap())
        .collect();
    // The same 62 pages, byte for byte, as the Python builder run on this file.
    assert_eq!(pages.len(), 62);
    assert!(pages[0].starts_with(" = Robert <unk> = \n \n Robert <unk> is an English film"));
    let digest = Sha256::digest(pages.join("\0").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "ce8a8e4491cd620bdf3457a41b14d483a16f7380e8d2dce8e53228666b4a79ba"
    );
}

#[test]
fn wikitext_pages_rules() {
    let text = " \n = A = \n x \n = = B = = \n y \n\n = C = \n z\n";
    assert_eq!(
        wikitext_pages(text),
        [" = A = \n x \n = = B = = \n y \n", " = C = \n z\n"]
    );
}

#[test]
fn jsonl_passthrough() {
    let Some(docs) = read(Loader::Jsonl, &["lambada/lambada_test.jsonl"], None) else {
        return;
    };
    assert_eq!(docs.len(), 5153);
    assert!(docs[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("In my palm is a clear stone"));
}

#[test]
fn mbpp_splits_by_task_id_in_hub_column_order() {
    let Some(path) = shared("mbpp/mbpp.jsonl") else {
        return;
    };
    let split = |name| Loader::MbppJsonl.read(std::slice::from_ref(&path), None, name);
    let test = split("test").unwrap().docs;
    assert_eq!(test.len(), 500);
    assert_eq!(
        (test[0]["task_id"].as_u64(), test[499]["task_id"].as_u64()),
        (Some(11), Some(510))
    );
    let columns: Vec<&String> = test[0].as_object().unwrap().keys().collect();
    assert_eq!(
        columns,
        [
            "task_id",
            "text",
            "code",
            "test_list",
            "test_setup_code",
            "challenge_test_list"
        ]
    );
    assert_eq!(test[0]["test_list"].as_array().unwrap().len(), 3);
    let sizes: Vec<usize> = ["prompt", "validation", "train"]
        .iter()
        .map(|name| split(name).unwrap().docs.len())
        .collect();
    assert_eq!(sizes, [10, 90, 374]);
    let error = split("dev").unwrap_err().to_string();
    assert!(error.contains("no split `dev`"), "{error}");
}

#[test]
fn humaneval_from_the_gzip_release_in_hub_column_order() {
    let Some(docs) = read(
        Loader::HumanevalJsonl,
        &["humaneval/HumanEval.jsonl.gz"],
        None,
    ) else {
        return;
    };
    assert_eq!(docs.len(), 164);
    assert_eq!(docs[0]["task_id"], "HumanEval/0");
    assert_eq!(docs[0]["entry_point"], "has_close_elements");
    let columns: Vec<&String> = docs[0].as_object().unwrap().keys().collect();
    assert_eq!(
        columns,
        [
            "task_id",
            "prompt",
            "canonical_solution",
            "test",
            "entry_point"
        ]
    );
    let path = shared("humaneval/HumanEval.jsonl.gz").unwrap();
    assert_eq!(
        super::super::formats::Format::from_path(&path),
        Some(super::super::formats::Format::Json)
    );
}

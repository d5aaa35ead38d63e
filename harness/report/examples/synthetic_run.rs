//! Writes a synthetic run directory (no model needed) and, except for `scale`, its report;
//! for trying the report and for the report-scale measurement in docs/performance.md:
//!
//! ```sh
//! cargo run --release -p moebench-report --example synthetic_run -- example DIR
//! cargo run --release -p moebench-report --example synthetic_run -- study DIR
//! cargo run --release -p moebench-report --example synthetic_run -- scale DIR 8 100 40 100
//! ```
//! `scale MODELS METHODS TASKS DOCS`: 8 × 100 × 40 × 100 writes about 100k records.
use moebench_report::synthetic::Synthetic;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let spec = match args.first().map(String::as_str) {
        Some("example") => Synthetic::example(),
        Some("study") => Synthetic::study(),
        Some("scale") => Synthetic::scale(number(2), number(3), number(4), number(5)),
        _ => usage(),
    };
    let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
    if let Err(e) = spec.write(&dir) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if args[0] == "scale" {
        println!("{}", dir.display());
        return;
    }
    match moebench_report::render(&dir, &[], None) {
        Ok(written) => println!("{}", written.html.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: synthetic_run (example|study) DIR | scale DIR MODELS METHODS TASKS DOCS");
    std::process::exit(2)
}

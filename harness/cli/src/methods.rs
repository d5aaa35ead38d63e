//! `moebench methods [--json]`: the method catalogue — every method with its kind, description
//! and parameters (type, range, default), generated from the catalogue itself.
use anyhow::Result;
use moebench_methods::catalogue::schemas;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON array of methods instead of text.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// The markdown table docs/suite-format.md carries.
    #[arg(long)]
    markdown: bool,
    /// Only this method.
    name: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let all = schemas();
    let chosen: Vec<_> = match &args.name {
        None => all,
        Some(name) => {
            vec![moebench_suite::methods::find_schema(&all, name).map_err(anyhow::Error::msg)?]
        }
    };
    if args.markdown {
        print!("{}", moebench_core::params::markdown_table(&chosen));
    } else if args.json {
        let list: Vec<serde_json::Value> = chosen.iter().map(|s| s.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for schema in chosen {
            print!("{schema}");
        }
    }
    Ok(())
}

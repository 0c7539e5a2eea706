//! What the kernel's verifier says when it refuses a program, as one line: its log is
//! pages of the refused path, and the reason is one line among them.

use anyhow::{anyhow, bail};
use aya::programs::ProgramError;

use crate::kernel;

/// A load result as one readable line: for a program the verifier refused, its reason (the
/// log itself would swamp the error line; with `verbose` it goes to stderr first).
pub fn load(name: &str, result: Result<(), ProgramError>, verbose: bool) -> anyhow::Result<()> {
    let Err(err) = result else {
        return Ok(());
    };
    if let ProgramError::LoadError { verifier_log, .. } = &err
        && let Some(refused) = refusal(name, &verifier_log.to_string(), verbose)
    {
        return Err(refused);
    }
    let text = err.to_string();
    let reason = text.split(". Verifier output").next().unwrap_or(&text);
    bail!("loading the eBPF program {name}: {reason}")
}

/// A program the verifier refused, with the reason its `log` gives; `None` if it gives none.
/// With `verbose` the whole log goes to stderr.
#[must_use]
pub fn refusal(name: &str, log: &str, verbose: bool) -> Option<anyhow::Error> {
    if verbose && !log.is_empty() {
        eprintln!(
            "the kernel's verifier refused {name}; its log:\n{}",
            log.trim_end()
        );
    }
    let reason = verifier_reason(log)?;
    let see = if verbose {
        "its log is above"
    } else {
        "run with -v for the verifier log"
    };
    Some(anyhow!(
        "the kernel's verifier refused {name}: {reason}; this kernel is {}; {see}",
        kernel::release()
    ))
}

/// The verifier's reason in its log: the last line that is not the trace of the refused
/// path (instructions, source lines, register and stack states, calls and returns) nor the
/// statistics after it.
fn verifier_reason(log: &str) -> Option<&str> {
    const NOT_REASONS: [&str; 12] = [
        ";",
        "from ",
        "caller:",
        "callee:",
        "returning from callee:",
        "to caller at ",
        "processed ",
        "verification time ",
        "stack depth ",
        "mark_precise:",
        "Validating ",
        // A note on the BTF of a function's arguments, printed before each call.
        "reg type unsupported for arg#",
    ];
    log.lines().map(str::trim).rev().find(|line| {
        !line.is_empty()
            && !NOT_REASONS.iter().any(|p| line.starts_with(p))
            && !is_instruction(line)
            && !is_state(line)
    })
}

/// `144: (85) call bpf_probe_read_user#112`, or the state at an instruction `881: frame1: …`.
fn is_instruction(line: &str) -> bool {
    line.split_once(": ")
        .is_some_and(|(at, _)| !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()))
}

/// Registers and stack slots: `R6=scalar(id=1) R7_w=0 fp-8=mmmmmmmm`, in a callee prefixed
/// `frame1: `.
fn is_state(line: &str) -> bool {
    let line = line
        .strip_prefix("frame")
        .and_then(|rest| rest.split_once(": "))
        .map_or(line, |(_, state)| state);
    line.split_whitespace().next().is_some_and(|first| {
        first
            .split_once('=')
            .is_some_and(|(slot, _)| slot.starts_with('R') || slot.starts_with("fp"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_program_and_the_verifiers_reason() {
        // Real logs of Debian 12's kernel 6.1 at the level map-trace asks for: an earlier
        // map_op, whose key length bound that verifier lost, and a program calling a helper
        // 6.1 does not have.
        let bounds = include_str!("../testdata/verifier-6.1-map_op-key-bounds.log");
        let reason = "R2 min value is negative, either use unsigned or 'var &= const'";
        assert_eq!(verifier_reason(bounds), Some(reason));
        let helper = include_str!("../testdata/verifier-6.1-unknown-helper.log");
        assert_eq!(verifier_reason(helper), Some("invalid func unknown#210"));
        let line = refusal("map_op", bounds, false).unwrap().to_string();
        let release = kernel::release();
        assert_eq!(
            line,
            format!(
                "the kernel's verifier refused map_op: {reason}; this kernel is {release}; run with -v for the verifier log"
            )
        );
        assert!(
            refusal("gc_event", helper, true)
                .unwrap()
                .to_string()
                .ends_with("its log is above")
        );
        // No reason in the log (the load failed before verifying): the caller's error.
        assert_eq!(verifier_reason(""), None);
        let trace = "0: R1=ctx() R10=fp0\n; x\n0: (b7) r0 = 0\nprocessed 1 insns (limit 1000000)\n";
        assert!(refusal("map_op", trace, false).is_none());
    }
}

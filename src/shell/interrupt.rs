//! Ctrl-C (SIGINT) while a long command runs: the command notices and stops
//! cleanly. Outside such a command Ctrl-C keeps its default effect (at the
//! interactive prompt rustyline reads it as a key and never sees a signal).

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::SIGINT;

/// Set by the signal handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// True when no interruptible command runs: SIGINT then acts as by default.
static DEFAULT_ACTION: AtomicBool = AtomicBool::new(true);

/// Installs the handler, once at start. Without it (an error here), Ctrl-C
/// simply ends the program, as it would by default.
pub fn install() -> std::io::Result<()> {
    signal_hook::flag::register_conditional_default(SIGINT, &DEFAULT_ACTION)?;
    signal_hook::flag::register(SIGINT, &INTERRUPTED)?;
    Ok(())
}

/// While this lives, Ctrl-C is caught and [`Catch::interrupted`] tells.
pub struct Catch(());

impl Catch {
    pub fn start() -> Catch {
        INTERRUPTED.store(false, Ordering::SeqCst);
        DEFAULT_ACTION.store(false, Ordering::SeqCst);
        Catch(())
    }

    pub fn interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }
}

impl Drop for Catch {
    fn drop(&mut self) {
        DEFAULT_ACTION.store(true, Ordering::SeqCst);
        INTERRUPTED.store(false, Ordering::SeqCst);
    }
}

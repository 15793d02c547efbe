//! Keyboard focus on a bare X server. With no window manager nothing gives a clicked window
//! the keyboard (winit's focus request is a message to the window manager), so every
//! shortcut would go nowhere. A press inside our window while it lacks focus sets the X input
//! focus directly. Under a window manager the click has focused the window already, and the
//! request is a no-op. Nothing here touches the library or other windows.

#[cfg(target_os = "linux")]
mod imp {
    use raw_window_handle::{HasWindowHandle, RawWindowHandle};
    use std::sync::OnceLock;
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, InputFocus};
    use x11rb::rust_connection::RustConnection;

    /// One connection for the app's lifetime, opened on first use; `None` when there is no
    /// X server (Wayland, headless tests).
    fn connection() -> Option<&'static RustConnection> {
        static CONN: OnceLock<Option<RustConnection>> = OnceLock::new();
        CONN.get_or_init(|| x11rb::connect(None).ok().map(|(c, _)| c))
            .as_ref()
    }

    pub fn take_focus(frame: &eframe::Frame) {
        let Ok(handle) = frame.window_handle() else {
            return;
        };
        let window = match handle.as_raw() {
            RawWindowHandle::Xlib(h) => h.window as u32,
            RawWindowHandle::Xcb(h) => h.window.get(),
            _ => return,
        };
        let Some(conn) = connection() else { return };
        // Errors only mean the keyboard stays where it was; never worth more than a log line.
        let sent = conn
            .set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME)
            .map(|_| ())
            .and_then(|_| conn.flush());
        if let Err(e) = sent {
            tracing::debug!("X input focus: {e}");
        }
    }
}

/// Gives the window the keyboard when a pointer press lands in it while it has none.
pub fn focus_on_press(ctx: &egui::Context, frame: &eframe::Frame) {
    let (pressed, focused) = ctx.input(|i| (i.pointer.any_pressed(), i.viewport().focused));
    if pressed && focused == Some(false) {
        #[cfg(target_os = "linux")]
        imp::take_focus(frame);
        #[cfg(not(target_os = "linux"))]
        let _ = frame;
    }
}

//! A small HTTPS file server for update bundles: GET and HEAD of files in
//! one directory, byte ranges (`Range: bytes=N-` and `N-M`, so a device can
//! resume a download), a thread per connection. Enough for a developer's
//! fleet and the tests, not a web server.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

#[derive(Debug, thiserror::Error)]
pub enum FileServerError {
    #[error("cannot read the server certificate or key {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error("TLS server setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct FileServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// GET requests answered (the tests count downloads).
    pub gets: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// A rustls server configuration from PEM files, offering `alpn`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, FileServerError> {
    let ident = |path: &Path, detail: String| FileServerError::Identity {
        path: path.to_path_buf(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| ident(cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ident(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FileServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| FileServerError::Tls(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

impl FileServer {
    pub fn start(
        bind: &str,
        port: u16,
        dir: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<FileServer, FileServerError> {
        let config = server_config(cert, key, &[b"http/1.1"])?;
        let addr_text = format!("{bind}:{port}");
        let listener = TcpListener::bind(&addr_text).map_err(|source| FileServerError::Bind {
            addr: addr_text.clone(),
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FileServerError::Bind {
                addr: addr_text,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(AtomicUsize::new(0));
        let (stop2, gets2, dir) = (stop.clone(), gets.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (config, dir, gets) = (config.clone(), dir.clone(), gets2.clone());
                std::thread::spawn(move || {
                    let _ = serve(tcp, config, &dir, &gets);
                });
            }
        });
        Ok(FileServer {
            addr,
            stop,
            gets,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    dir: &Path,
    gets: &AtomicUsize,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = BufReader::new(StreamOwned::new(conn, tcp));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if (&mut tls).take(8192).read_line(&mut line)? == 0 || head.len() > 100 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let request = head.first().cloned().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let range = head.iter().skip(1).find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("range")
            .then(|| v.trim().to_string())
    });
    let stream = tls.get_mut();
    let name = path.trim_start_matches('/');
    let ok_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    let file = if ok_name {
        std::fs::File::open(dir.join(name)).ok()
    } else {
        None
    };
    let Some(mut file) = file.filter(|_| method == "GET" || method == "HEAD") else {
        let status = if method == "GET" || method == "HEAD" {
            "404 Not Found"
        } else {
            "405 Method Not Allowed"
        };
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        stream.conn.send_close_notify();
        return stream.flush();
    };
    let len = file.metadata()?.len();
    let (start, end) = match range.as_deref().and_then(|r| parse_range(r, len)) {
        Some(r) => r,
        None if range.is_some() => {
            write!(stream, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            stream.conn.send_close_notify();
            return stream.flush();
        }
        None => (0, len),
    };
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}",
            end.saturating_sub(1)
        )
    } else {
        "200 OK".to_string()
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        end - start
    )?;
    if method == "GET" {
        gets.fetch_add(1, Ordering::Relaxed);
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut file.take(end - start), stream)?;
    }
    stream.conn.send_close_notify();
    stream.flush()
}

/// `bytes=N-` or `bytes=N-M` (inclusive) → [start, end).
fn parse_range(r: &str, len: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len,
        b => b.parse::<u64>().ok()?.checked_add(1)?.min(len),
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_range("bytes=4-5", 10), Some((4, 6)));
        assert_eq!(parse_range("bytes=4-50", 10), Some((4, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("items=1-2", 10), None);
    }
}

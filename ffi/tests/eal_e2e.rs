//! End to end through a real EAL, once per process (DPDK allows one
//! `rte_eal_init` per process, so this target has `harness = false` and runs
//! its steps in order): `--no-huge --no-pci` with a `net_ring` vdev, whose
//! transmit ring is its receive ring (a loopback).
//!
//! Steps: EAL init (and a refused second one), ports, a pool, mbuf
//! operations (chains and shared buffers included), the port lifecycle, a
//! burst sent and received back byte for byte, stats and xstats, a full
//! transmit ring (what tx_burst leaves is kept, nothing leaks), queues and
//! the pool used from other threads (one registered with DPDK), a memzone,
//! and the cleanup: nothing left in the runtime directory.
//!
//! Bounded: every loop has a fixed number of turns, and a watchdog ends the
//! process if the whole run exceeds a minute.

mod common;

#[cfg(blipmq_dpdk_missing)]
fn main() {
    common::dpdk_missing();
    println!("eal_e2e: 0 passed, 0 failed, 1 skipped");
}

#[cfg(not(blipmq_dpdk_missing))]
fn main() {
    e2e::main();
}

#[cfg(not(blipmq_dpdk_missing))]
mod e2e {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use blipmq_dpdk_sys::sys;
    use blipmq_dpdk_sys::{Eal, Error, Mbuf, MbufBurst, Mempool, Memzone, Port, PortConf};

    const POOL_SIZE: u32 = 2047;
    const BURST: usize = 32;

    pub fn main() {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(Duration::from_secs(60))
            {
                eprintln!("eal_e2e: watchdog: still running after 60 s, aborting");
                std::process::exit(2);
            }
        });

        let prefix = format!("blipmq-ffi-test-{}", std::process::id());
        let mut passed = 0usize;
        let mut step = |name: &str, f: &mut dyn FnMut()| {
            f();
            println!("test {name} ... ok");
            passed += 1;
        };

        let args: Vec<String> = [
            "--no-huge",
            "--no-pci",
            "-m",
            "256",
            "-l",
            "0",
            "--file-prefix",
            &prefix,
            "--vdev=net_ring0",
            "--log-level=lib.eal:warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();

        let mut eal = None;
        step("eal_init", &mut || eal = Some(init(&args)));
        let eal = eal.unwrap();
        let runtime_dir = eal.runtime_dir().to_path_buf();
        step("eal_init_twice_is_an_error", &mut || {
            let err = Eal::init(&args).unwrap_err();
            assert!(matches!(err, Error::EalAlreadyInitialized), "{err}");
        });

        let mut port_id = 0;
        step("ports", &mut || port_id = ports(&eal));

        let pool = Mempool::pktmbuf(
            &eal,
            "e2e_pool",
            POOL_SIZE,
            32,
            Mempool::DEFAULT_DATA_ROOM,
            None,
        )
        .expect("pool");
        step("mempool", &mut || {
            assert_eq!(pool.capacity(), POOL_SIZE);
            assert_eq!(pool.available(), POOL_SIZE);
            assert_eq!(pool.in_use(), 0);
            assert_eq!(pool.dpdk_name(), "e2e_pool");
            let err = Mempool::pktmbuf(&eal, "e2e_pool", 63, 0, 2176, None).unwrap_err();
            assert_eq!(err.code(), Some(libc::EEXIST), "{err}");
            assert!(err.to_string().contains("File exists"), "{err}");
        });
        step("mbuf_ops", &mut || mbuf_ops(&pool));
        step("mbuf_chain_is_not_one_slice", &mut || mbuf_chain(&pool));
        step("mbuf_shared_buffer_is_read_only", &mut || {
            mbuf_shared(&pool)
        });
        step("burst_alloc_push_pop_drain", &mut || bursts(&pool));
        step("port_loopback", &mut || port_loopback(&eal, port_id, &pool));
        step("thread_registration", &mut || {
            thread_registration(&eal, &pool)
        });
        step("rx_interrupts_on_tap", &mut || {
            rx_interrupts_on_tap(&eal, &pool)
        });
        step("memzone", &mut || memzone(&eal));
        assert_eq!(pool.in_use(), 0, "mbufs leaked");
        drop(pool);

        step("cleanup_leaves_no_runtime_dir", &mut || {
            assert!(
                runtime_dir.exists(),
                "{} missing while the EAL runs",
                runtime_dir.display()
            );
            drop(eal.clone()); // a clone going does not clean up
            assert!(runtime_dir.exists());
            drop(eal.clone());
        });
        drop(eal);
        step("after_cleanup", &mut || {
            assert!(
                !runtime_dir.exists(),
                "{} left behind",
                runtime_dir.display()
            );
            let var_run = Path::new("/var/run/dpdk").join(&prefix);
            assert!(!var_run.exists(), "{} left behind", var_run.display());
            let err = Eal::init(&args).unwrap_err();
            assert!(matches!(err, Error::EalAlreadyInitialized), "{err}");
        });

        let _ = done_tx.send(());
        println!("eal_e2e: {passed} passed, 0 failed");
    }

    fn init(args: &[String]) -> Eal {
        let eal = Eal::init(args).expect("rte_eal_init");
        assert!(eal.is_primary());
        assert!(!eal.has_hugepages(), "--no-huge");
        assert_eq!(eal.main_lcore(), 0);
        assert_eq!(eal.lcore_count(), 1);
        assert_eq!(Eal::current_lcore(), Some(0), "the main thread is lcore 0");
        assert!(Eal::current_socket().is_some());
        let dir = eal.runtime_dir();
        assert!(dir.ends_with(args[7].as_str()), "{}", dir.display());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(dir, Path::new("/var/run/dpdk").join(&args[7]));
        }
        eal
    }

    fn ports(eal: &Eal) -> u16 {
        let ports = eal.ports();
        let id = eal.port_by_name("net_ring0").expect("net_ring0");
        assert_eq!(ports, vec![id]);
        let err = eal.port_by_name("net_nothing9").unwrap_err();
        assert!(err.code().is_some(), "{err}");
        let info = eal.port_info(id).expect("info");
        assert_eq!(info.driver_name, "net_ring");
        assert!(
            info.max_rx_queues >= 1 && info.max_tx_queues >= 1,
            "{info:?}"
        );
        id
    }

    fn mbuf_ops(pool: &Mempool) {
        let mut m = pool.alloc().expect("alloc");
        assert_eq!(pool.in_use(), 1);
        assert!(m.is_empty() && m.is_contiguous() && m.is_writable());
        assert_eq!(m.refcnt(), 1);
        assert_eq!(m.nb_segs(), 1);
        assert_eq!(m.headroom(), sys::RTE_PKTMBUF_HEADROOM as usize);
        assert_eq!(m.tailroom(), 2048);
        assert_eq!(m.data(), Some(&[][..]));

        let body = m.append(10).expect("append");
        body.copy_from_slice(b"0123456789");
        assert!(m.extend_from_slice(b"abc"));
        assert_eq!(m.data().unwrap(), b"0123456789abc");
        assert_eq!(m.len(), 13);
        // The Rust-side field reads agree with DPDK's inline accessors.
        // SAFETY: m is a valid mbuf; the accessors only read its header.
        unsafe {
            assert_eq!(
                sys::blipmq_pktmbuf_mtod(m.as_ptr()).cast_const(),
                m.data().unwrap().as_ptr().cast()
            );
            assert_eq!(sys::blipmq_pktmbuf_pkt_len(m.as_ptr()), 13);
            assert_eq!(sys::blipmq_pktmbuf_data_len(m.as_ptr()), 13);
            assert_eq!(sys::blipmq_pktmbuf_is_contiguous(m.as_ptr()), 1);
            assert_eq!(sys::blipmq_mbuf_ol_flags(m.as_ptr()), m.ol_flags());
        }
        m.prepend(2).expect("prepend").copy_from_slice(b"<<");
        assert_eq!(m.data().unwrap(), b"<<0123456789abc");
        assert_eq!(m.headroom(), 126);
        assert!(m.adj(2));
        assert!(m.trim(3));
        assert_eq!(m.data().unwrap(), b"0123456789");
        m.data_mut().unwrap()[0] = b'X';
        assert_eq!(m.segments().collect::<Vec<_>>(), vec![&b"X123456789"[..]]);
        assert!(m.append(4096).is_none(), "beyond the tailroom");
        assert!(!m.adj(11) && !m.trim(11), "beyond the data");
        assert_eq!(m.len(), 10);

        m.set_tx_offload(
            14,
            20,
            sys::RTE_MBUF_F_TX_IPV4 | sys::RTE_MBUF_F_TX_IP_CKSUM | sys::RTE_MBUF_F_TX_TCP_CKSUM,
        );
        assert_eq!(m.tx_offload_lens(), (14, 20));
        assert_eq!(
            m.ol_flags(),
            sys::RTE_MBUF_F_TX_IPV4 | sys::RTE_MBUF_F_TX_IP_CKSUM | sys::RTE_MBUF_F_TX_TCP_CKSUM
        );
        m.set_tx_offload(14, 40, sys::RTE_MBUF_F_TX_IPV6);
        assert_eq!(m.ol_flags(), sys::RTE_MBUF_F_TX_IPV6, "TX flags replaced");
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let bad = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.set_tx_offload(128, 20, 0);
        }));
        std::panic::set_hook(hook);
        assert!(bad.is_err(), "l2_len 128 does not fit 7 bits");

        // into_raw/from_raw round trip, then drop frees.
        let raw = m.into_raw();
        assert_eq!(pool.in_use(), 1);
        // SAFETY: raw came from into_raw just above and is still ours.
        let m = unsafe { Mbuf::from_raw(raw) };
        drop(m);
        assert_eq!(pool.in_use(), 0);
    }

    fn mbuf_chain(pool: &Mempool) {
        let mut head = pool.alloc().unwrap();
        let mut tail = pool.alloc().unwrap();
        assert!(head.extend_from_slice(b"head-"));
        assert!(tail.extend_from_slice(b"tail"));
        let tail = tail.into_raw();
        let h = head.as_mut_ptr();
        // SAFETY: chains two mbufs we own the way rte_pktmbuf_chain does;
        // the head takes over the tail's reference.
        unsafe {
            (*h).next = tail.as_ptr();
            (*h).nb_segs = 2;
            (*h).pkt_len += u32::from((*tail.as_ptr()).data_len);
        }
        assert_eq!(head.len(), 9);
        assert_eq!(head.nb_segs(), 2);
        assert!(!head.is_contiguous());
        assert_eq!(head.data(), None, "a chain is not one slice");
        assert_eq!(head.data_mut(), None);
        assert!(head.append(1).is_none());
        let segs: Vec<&[u8]> = head.segments().collect();
        assert_eq!(segs, vec![&b"head-"[..], &b"tail"[..]]);
        assert_eq!(head.tailroom(), 2048 - 4, "of the last segment");
        assert_eq!(pool.in_use(), 2);
        drop(head);
        assert_eq!(pool.in_use(), 0, "the drop frees every segment");
    }

    fn mbuf_shared(pool: &Mempool) {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(b"shared"));
        // SAFETY: a second reference, taken and given back below; nothing
        // frees the mbuf in between.
        unsafe { sys::blipmq_mbuf_refcnt_update(m.as_mut_ptr(), 1) };
        assert_eq!(m.refcnt(), 2);
        assert!(!m.is_writable());
        assert_eq!(m.data().unwrap(), b"shared");
        assert!(
            m.data_mut().is_none(),
            "a shared buffer is not ours to write"
        );
        assert!(m.append(1).is_none() && m.prepend(1).is_none());
        // SAFETY: gives back the reference taken above.
        unsafe { sys::blipmq_mbuf_refcnt_update(m.as_mut_ptr(), -1) };
        assert!(m.data_mut().is_some());
    }

    fn bursts(pool: &Mempool) {
        let mut b = MbufBurst::<8>::new();
        assert!(pool.alloc_bulk(&mut b, 5));
        assert_eq!((b.len(), pool.in_use()), (5, 5));
        assert!(!pool.alloc_bulk(&mut b, 4), "more than the free room");
        assert_eq!(b.len(), 5, "all or none");
        for (i, m) in b.as_mut_slice().iter_mut().enumerate() {
            assert!(m.extend_from_slice(&[i as u8]));
        }
        let last = b.pop().unwrap();
        assert_eq!(last.data().unwrap(), &[4]);
        let mut drained = b.drain();
        assert_eq!(drained.next().unwrap().data().unwrap(), &[0]);
        drop(drained); // frees the 3 not taken
        assert!(b.is_empty());
        assert_eq!(pool.in_use(), 1);
        b.push(last).unwrap();
        assert!(pool.alloc_bulk(&mut b, 7));
        assert!(b.is_full());
        let extra = pool.alloc().unwrap();
        let extra = b.push(extra).unwrap_err();
        drop(extra);
        assert_eq!(pool.in_use(), 8);
        drop(b);
        assert_eq!(pool.in_use(), 0);
    }

    fn port_loopback(eal: &Eal, id: u16, pool: &Mempool) {
        let mut port = Port::open(eal, id).expect("open");
        let again = Port::open(eal, id).unwrap_err();
        assert!(matches!(again, Error::InvalidState(_)), "{again}");
        assert!(Port::open(eal, 31).is_err());
        let info = port.info().unwrap();

        assert!(port.rx_queue(0).is_err(), "not started");
        assert!(port.start().is_err(), "not configured");
        let conf = PortConf {
            rss_hf: sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP,
            ..PortConf::default()
        };
        let applied = port.configure(1, 1, &conf).expect("configure");
        assert_eq!(
            applied.rss_hf,
            conf.rss_hf & info.flow_type_rss_offloads,
            "masked (pitfall 1)"
        );
        assert!(port.start().is_err(), "queues not set up");
        assert!(
            port.setup_rx_queue(1, 512, pool).is_err(),
            "only one rx queue"
        );
        let rx_desc = port.setup_rx_queue(0, 512, pool).expect("rx queue");
        assert!(rx_desc > 0);
        port.setup_tx_queue(0, 512).expect("tx queue");
        port.start().expect("start");
        assert!(port.setup_tx_queue(0, 512).is_err(), "started");

        match port.promiscuous(true) {
            Ok(()) => {}
            Err(e) => assert_eq!(e.code(), Some(libc::ENOTSUP), "{e}"),
        }
        let link = port.link().expect("link");
        assert!(link.up, "{link:?}");
        assert_eq!(port.mac_addr().unwrap(), info.mac);

        let mut rx = port.rx_queue(0).expect("rx queue");
        let mut tx = port.tx_queue(0).expect("tx queue");
        assert!(port.rx_queue(0).is_err(), "taken");
        assert!(port.tx_queue(0).is_err(), "taken");
        assert!(port.rx_queue(1).is_err(), "no such queue");
        assert!(port.stop().is_err(), "queues held");

        // net_ring has no receive interrupts.
        assert_eq!(port.rx_intr_fd(0), None);
        assert_eq!(rx.intr_fd(), None);
        let err = rx.intr_enable().unwrap_err();
        assert!(
            err.code().is_some() && err.to_string().contains("rte_eth_dev_rx_intr_enable"),
            "{err}"
        );
        assert!(rx.intr_disable().is_err());

        // One burst out and back, byte for byte.
        let mut out = MbufBurst::<BURST>::new();
        assert!(pool.alloc_bulk(&mut out, BURST));
        for (i, m) in out.as_mut_slice().iter_mut().enumerate() {
            assert!(m.extend_from_slice(&frame(i, 60 + i)));
        }
        assert_eq!(tx.tx_burst(&mut out), BURST);
        assert!(out.is_empty());
        let mut back = MbufBurst::<64>::new();
        for _ in 0..100 {
            if back.len() >= BURST {
                break;
            }
            rx.rx_burst(&mut back);
        }
        assert_eq!(back.len(), BURST);
        for (i, m) in back.as_slice().iter().enumerate() {
            assert_eq!(m.data().unwrap(), &frame(i, 60 + i)[..], "frame {i}");
        }
        drop(back);
        assert_eq!(pool.in_use(), 0);

        let stats = port.stats().unwrap();
        assert_eq!(
            (stats.opackets, stats.ipackets),
            (BURST as u64, BURST as u64),
            "{stats:?}"
        );
        assert_eq!(
            (stats.q_opackets[0], stats.q_ipackets[0]),
            (BURST as u64, BURST as u64)
        );
        assert_eq!(stats.oerrors + stats.ierrors + stats.imissed, 0);
        let bytes: u64 = (0..BURST).map(|i| 60 + i as u64).sum();
        // net_ring counts bytes since DPDK 23.x; 22.11 leaves them 0.
        assert!(stats.obytes == 0 || stats.obytes == bytes, "{stats:?}");
        let xstats = port.xstats().unwrap();
        let get = |name: &str| xstats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("rx_good_packets"), Some(BURST as u64), "{xstats:?}");
        assert_eq!(get("tx_good_packets"), Some(BURST as u64), "{xstats:?}");
        assert_eq!(get("rx_q0_packets"), Some(BURST as u64), "{xstats:?}");

        // Fill the loopback ring: tx_burst keeps what the PMD refuses.
        let mut sent = 0usize;
        let mut refused = 0usize;
        for round in 0..100 {
            let mut b = MbufBurst::<BURST>::new();
            assert!(pool.alloc_bulk(&mut b, BURST));
            for (i, m) in b.as_mut_slice().iter_mut().enumerate() {
                assert!(m.extend_from_slice(&frame(round * BURST + i, 64)));
            }
            let n = tx.tx_burst(&mut b);
            sent += n;
            if n < BURST {
                refused = b.len();
                assert_eq!(refused, BURST - n, "the rest stays in the burst");
                // The first left is the first refused.
                assert_eq!(
                    b.as_slice()[0].data().unwrap(),
                    &frame(round * BURST + n, 64)[..]
                );
                assert_eq!(tx.tx_burst(&mut b), 0, "still full");
                assert_eq!(pool.in_use() as usize, sent + refused);
                b.clear();
                break;
            }
        }
        assert!(refused > 0, "the ring never filled");
        assert_eq!(pool.in_use() as usize, sent);
        let one = pool.alloc().unwrap();
        let one = tx.tx_one(one).unwrap_err();
        drop(one);

        // Drain it from another thread: queues are Send.
        let received = std::thread::scope(|s| {
            s.spawn(move || {
                let mut got = 0usize;
                let mut b = MbufBurst::<64>::new();
                for _ in 0..1000 {
                    let n = rx.rx_burst(&mut b);
                    if n == 0 {
                        break;
                    }
                    for (k, m) in b.drain().enumerate() {
                        assert_eq!(m.data().unwrap(), &frame(got + k, 64)[..]);
                    }
                    got += n;
                }
                (got, rx)
            })
            .join()
            .unwrap()
        });
        let (got, rx) = received;
        assert_eq!(got, sent);
        assert_eq!(pool.in_use(), 0, "every mbuf is back");
        let stats = port.stats().unwrap();
        assert_eq!(stats.opackets, (BURST + sent) as u64);
        port.reset_stats().unwrap();
        assert_eq!(port.stats().unwrap().opackets, 0);

        drop(rx);
        drop(tx);
        port.stop().expect("stop");
        assert!(port.stop().is_err(), "already stopped");
        assert!(port.rx_queue(0).is_err(), "stopped");
        port.close().expect("close");
        assert_eq!(pool.in_use(), 0);
    }

    /// A recognisable frame: `len` bytes, the index in the first four.
    fn frame(i: usize, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (k, b) in f.iter_mut().enumerate().skip(4) {
            *b = (i + k) as u8;
        }
        f
    }

    fn thread_registration(eal: &Eal, pool: &Mempool) {
        let err = eal.register_thread().unwrap_err();
        assert!(
            matches!(err, Error::ThreadAlreadyRegistered { lcore: 0 }),
            "{err}"
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(Eal::current_lcore(), None, "a plain thread");
                assert_eq!(pool.local_cache_len(), None, "no cache (pitfall 6)");
                drop(pool.alloc().expect("alloc without a cache"));
                let reg = eal.register_thread().expect("rte_thread_register");
                let lcore = reg.lcore_id();
                assert_ne!(lcore, 0);
                assert_eq!(Eal::current_lcore(), Some(lcore));
                assert!(eal.register_thread().is_err(), "registered already");
                let before = pool.local_cache_len().expect("a cache now");
                let mut b = MbufBurst::<16>::new();
                assert!(pool.alloc_bulk(&mut b, 16));
                for m in b.as_mut_slice() {
                    assert!(m.extend_from_slice(b"from a worker"));
                }
                b.clear();
                assert!(
                    pool.local_cache_len().unwrap() > before,
                    "freed into this lcore's cache"
                );
                drop(reg);
                assert_eq!(Eal::current_lcore(), None, "unregistered");
            });
        });
        assert_eq!(pool.in_use(), 0);
    }

    /// net_ring has no receive interrupts; net_tap has. It needs root and
    /// /dev/net/tun, and creates a kernel tap interface (no address, no
    /// traffic sent) that goes away with the port.
    fn rx_interrupts_on_tap(eal: &Eal, pool: &Mempool) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/net/tun").exists() {
            crate::common::skip("rx_interrupts_on_tap: net_tap needs root and /dev/net/tun");
            return;
        }
        let iface = format!("bmqffi{}", std::process::id() % 10_000_000);
        eal.probe_device(&format!("net_tap9,iface={iface}"))
            .expect("probe net_tap9");
        let id = eal.port_by_name("net_tap9").expect("net_tap9");
        assert!(eal.ports().contains(&id));
        let mut port = Port::open(eal, id).unwrap();
        let conf = PortConf {
            rx_interrupts: true,
            ..PortConf::default()
        };
        port.configure(1, 1, &conf)
            .expect("configure with rx interrupts");
        port.setup_rx_queue(0, 256, pool).unwrap();
        port.setup_tx_queue(0, 256).unwrap();
        port.start().unwrap();
        let fd = port.rx_intr_fd(0).expect("tap has an rx interrupt fd");
        let mut rx = port.rx_queue(0).unwrap();
        assert_eq!(rx.intr_fd(), Some(fd));
        // SAFETY: F_GETFD on any int is harmless; checks the fd is open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0, "fd {fd} is open");
        // net_tap's fd is its queue's own (readable when packets wait): it has
        // no arm/disarm op, and says so.
        for r in [rx.intr_enable(), rx.intr_disable()] {
            if let Err(e) = r {
                assert_eq!(e.code(), Some(libc::ENOTSUP), "{e}");
            }
        }
        let mut b = MbufBurst::<32>::new();
        for _ in 0..4 {
            rx.rx_burst(&mut b); // whatever the kernel sent (router solicitations)
        }
        b.clear();
        drop(rx);
        port.close().expect("close");
        assert_eq!(pool.in_use(), 0);
    }

    fn memzone(eal: &Eal) {
        let mut mz = Memzone::reserve(eal, "e2e_mz", 4096, None).expect("memzone");
        assert!(mz.len() >= 4096);
        assert_eq!(mz.name(), "e2e_mz");
        assert!(mz.as_slice().iter().all(|&b| b == 0));
        mz.as_mut_slice()[..5].copy_from_slice(b"hello");
        assert_eq!(&mz.as_slice()[..5], b"hello");
        let dup = Memzone::reserve(eal, "e2e_mz", 64, None).unwrap_err();
        assert_eq!(dup.code(), Some(libc::EEXIST), "{dup}");
        assert!(Memzone::reserve(eal, "e2e_zero", 0, None).is_err());
        drop(mz);
        let again = Memzone::reserve(eal, "e2e_mz", 64, None).expect("freed on drop");
        drop(again);
    }
}

/*
 * What bindgen binds (through the allowlist in build.rs: rte_* functions and
 * types, RTE_* constants, blipmq_* shim symbols) and what the constants
 * generator scans. Everything a poll-mode TCP dataplane needs, nothing more.
 */
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ether.h>
#include <rte_memzone.h>
#include <rte_malloc.h>

#include "src/shim.h"

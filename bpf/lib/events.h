/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * events.h: reserve and fill the common header of a ring-buffer record.
 * A failed reserve is counted (MANUL_ERR_RINGBUF_FULL), never silent.
 */
#ifndef MANUL_EVENTS_H
#define MANUL_EVENTS_H

#include "manul.h"
#include "errmetrics.h"

static __always_inline void *manul_reserve(void *ringbuf, __u32 size, __u16 type)
{
	struct manul_event_hdr *hdr = bpf_ringbuf_reserve(ringbuf, size, 0);

	if (!hdr) {
		manul_count_err(MANUL_ERR_RINGBUF_FULL);
		return NULL;
	}
	hdr->type = type;
	hdr->size = size;
	hdr->cpu = bpf_get_smp_processor_id();
	hdr->ktime_ns = bpf_ktime_get_ns();
	return hdr;
}

#endif /* MANUL_EVENTS_H */

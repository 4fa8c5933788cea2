/* ports.c - NAME/ports/PORT on CW Sandbox: a sandbox exposes the ports
 * given at create (`new NAME port=P`, spec.services) and the platform
 * reports each one's URL in status.services[].url (or its endpoint's
 * url).  Both come from GetSandbox (cw_sb_get) and are read from the
 * record's proto3 JSON: reading PORT answers that URL, ENOENT with a
 * sentence when PORT was not exposed, EAGAIN while the platform has not
 * given its URL yet; `ls NAME/ports/` lists the exposed ports. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api/cwsandbox/cw_int.h"

struct port_op {
	unsigned port; /* 0: list */
	api_str_fn cb;
	void *ud;
};

static const cJSON *obj(const cJSON *o, const char *k)
{
	return cJSON_GetObjectItemCaseSensitive(o, k);
}

static unsigned port_of(const cJSON *svc)
{
	const cJSON *p = obj(svc, "port");

	if (cJSON_IsNumber(p) && p->valuedouble >= 1 && p->valuedouble <= 65535)
		return (unsigned)p->valuedouble;
	return 0;
}

static const char *url_of(const cJSON *svc)
{
	const cJSON *u = obj(svc, "url");

	if (!cJSON_IsString(u) || !u->valuestring[0])
		u = obj(obj(svc, "endpoint"), "url");
	return cJSON_IsString(u) && u->valuestring[0] ? u->valuestring : NULL;
}

static void got(void *ud, int err, const char *msg,
		const struct api_sandbox *sb)
{
	struct port_op *op = ud;
	cJSON *j = NULL;
	const cJSON *svc, *specs, *stats;
	char m[200], *text = NULL;
	size_t len = 0;

	if (err) {
		op->cb(op->ud, err, msg, NULL);
		free(op);
		return;
	}
	j = sb && sb->info_json ? cJSON_Parse(sb->info_json) : NULL;
	specs = obj(obj(j, "spec"), "services");
	stats = obj(obj(j, "status"), "services");
	if (!op->port) {
		text = calloc(1, 16 * 7 + 1);
		cJSON_ArrayForEach(svc, specs)
		{
			unsigned p = port_of(svc);

			if (text && p && len < 16 * 7)
				len += (size_t)snprintf(text + len, 8, "%u\n", p);
		}
		if (text)
			op->cb(op->ud, 0, NULL, text);
		else
			op->cb(op->ud, -ENOMEM, "cwsandbox: out of memory", NULL);
		goto out;
	}
	cJSON_ArrayForEach(svc, stats)
	{
		if (port_of(svc) == op->port && url_of(svc)) {
			op->cb(op->ud, 0, NULL, url_of(svc));
			goto out;
		}
	}
	bool exposed = false;
	cJSON_ArrayForEach(svc, specs)
		exposed = exposed || port_of(svc) == op->port;
	if (exposed) {
		snprintf(m, sizeof(m), "cwsandbox: port %u is exposed but the "
			 "platform gives no URL for it yet", op->port);
		op->cb(op->ud, -EAGAIN, m, NULL);
	} else {
		snprintf(m, sizeof(m), "cwsandbox: port %u is not exposed "
			 "(create the sandbox with port=%u)", op->port,
			 op->port);
		op->cb(op->ud, -ENOENT, m, NULL);
	}
out:
	free(text);
	cJSON_Delete(j);
	free(op);
}

static void ask(struct api_backend *be, const char *id, unsigned port,
		api_str_fn cb, void *ud)
{
	struct port_op *op = calloc(1, sizeof(*op));

	if (!op) {
		cb(ud, -ENOMEM, "cwsandbox: out of memory", NULL);
		return;
	}
	op->port = port;
	op->cb = cb;
	op->ud = ud;
	cw_sb_get(be, id, got, op);
}

void cw_sb_port(struct api_backend *be, const char *id, unsigned port,
		api_str_fn cb, void *ud)
{
	ask(be, id, port, cb, ud);
}

void cw_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		 void *ud)
{
	ask(be, id, 0, cb, ud);
}

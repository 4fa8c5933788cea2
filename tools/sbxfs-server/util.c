/* util.c - capped buffers and the byte-exact encoders Wrenn's Go uses. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv.h"

void srv_buf_init(struct srv_buf *b, size_t max)
{
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void srv_buf_free(struct srv_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
}

int srv_buf_add(struct srv_buf *b, const void *p, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return -E2BIG;
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		char *np;

		while (nc < b->len + n + 1)
			nc *= 2;
		np = realloc(b->p, nc);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int srv_buf_addf(struct srv_buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	return srv_buf_add(b, tmp, n);
}

void srv_buf_consume(struct srv_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->p, b->p + n, b->len - n);
		b->len -= n;
	}
	if (b->p)
		b->p[b->len] = '\0';
	/* give back memory of a drained big buffer */
	if (!b->len && b->cap > SRV_PIPE_WIN * 4) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

/* Length of the valid UTF-8 sequence at p (1-4), 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t len, i;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

bool srv_utf8_valid(const void *vp, size_t n)
{
	const unsigned char *p = vp;
	size_t i = 0, l;

	while (i < n) {
		l = utf8_seq(p + i, n - i);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

int srv_json_str(struct srv_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, l;
	int rc = srv_buf_add(b, "\"", 1);

	while (!rc && i < n) {
		unsigned c = p[i];
		char e[8];

		if (c >= 0x80) {
			l = utf8_seq(p + i, n - i);
			if (!l) {
				rc = srv_buf_add(b, "\\ufffd", 6);
				i++;
				continue;
			}
			/* U+2028, U+2029: Go escapes them */
			if (l == 3 && c == 0xe2 && p[i + 1] == 0x80 &&
			    (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
				rc = srv_buf_add(b, p[i + 2] == 0xa8 ?
						 "\\u2028" : "\\u2029", 6);
			} else {
				rc = srv_buf_add(b, p + i, l);
			}
			i += l;
			continue;
		}
		switch (c) {
		case '"':
			rc = srv_buf_add(b, "\\\"", 2);
			break;
		case '\\':
			rc = srv_buf_add(b, "\\\\", 2);
			break;
		case '\n':
			rc = srv_buf_add(b, "\\n", 2);
			break;
		case '\r':
			rc = srv_buf_add(b, "\\r", 2);
			break;
		case '\t':
			rc = srv_buf_add(b, "\\t", 2);
			break;
		default:
			if (c < 0x20 || c == '<' || c == '>' || c == '&') {
				e[0] = '\\';
				e[1] = 'u';
				e[2] = '0';
				e[3] = '0';
				e[4] = hex[c >> 4];
				e[5] = hex[c & 15];
				rc = srv_buf_add(b, e, 6);
			} else {
				rc = srv_buf_add(b, p + i, 1);
			}
		}
		i++;
	}
	return rc ? rc : srv_buf_add(b, "\"", 1);
}

int srv_base64(struct srv_buf *b, const void *vp, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = vp;
	size_t i;
	int rc = 0;

	for (i = 0; !rc && i + 2 < n; i += 3) {
		char o[4] = { t[p[i] >> 2],
			      t[((p[i] & 3) << 4) | (p[i + 1] >> 4)],
			      t[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)],
			      t[p[i + 2] & 63] };
		rc = srv_buf_add(b, o, 4);
	}
	if (!rc && n - i == 1) {
		char o[4] = { t[p[i] >> 2], t[(p[i] & 3) << 4], '=', '=' };

		rc = srv_buf_add(b, o, 4);
	} else if (!rc && n - i == 2) {
		char o[4] = { t[p[i] >> 2],
			      t[((p[i] & 3) << 4) | (p[i + 1] >> 4)],
			      t[(p[i + 1] & 15) << 2], '=' };

		rc = srv_buf_add(b, o, 4);
	}
	return rc;
}

void srv_rfc3339(time_t t, char *out, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

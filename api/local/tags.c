/* tags.c - tags of local sandboxes (`new NAME tag=T`, repeatable): kept in
 * meta.json as a "tags" array, handed up as "a,b,c" (api_sandbox.tags). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api/local/local_core.h"

static bool has_tag(const char *tags, const char *t)
{
	size_t n = strlen(t);

	for (const char *p = tags; *p;) {
		const char *e = strchr(p, ',');
		size_t k = e ? (size_t)(e - p) : strlen(p);

		if (k == n && !strncmp(p, t, n))
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

int local_tags_add(char *tags, size_t len, const char *t, char *msg,
		   size_t msglen)
{
	size_t used = strlen(tags);

	if (!api_tag_valid(t)) {
		snprintf(msg, msglen, "tag=%.63s: a tag is 1 to 63 letters, "
			 "digits, '.', '_' or '-', starting with a letter or "
			 "digit", t);
		return -EINVAL;
	}
	if (has_tag(tags, t))
		return 0;
	if (used + (used ? 1 : 0) + strlen(t) + 1 > len) {
		snprintf(msg, msglen, "tag=%.63s: too many tags (at most %zu "
			 "bytes together)", t, len - 1);
		return -EINVAL;
	}
	snprintf(tags + used, len - used, "%s%s", used ? "," : "", t);
	return 0;
}

void local_tags_read(const struct cJSON *o, char *tags, size_t len)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "tags");
	const cJSON *it;
	char ignore[160];

	tags[0] = '\0';
	cJSON_ArrayForEach(it, a)
	{
		/* a damaged entry is left out, the rest kept */
		if (cJSON_IsString(it) && it->valuestring)
			local_tags_add(tags, len, it->valuestring, ignore,
				       sizeof(ignore));
	}
}

void local_tags_write(struct cJSON *o, const char *tags)
{
	cJSON *a = cJSON_AddArrayToObject(o, "tags");
	char buf[LOCAL_TAGS_MAX], *save = NULL;

	if (!a)
		return;
	snprintf(buf, sizeof(buf), "%s", tags);
	for (char *t = strtok_r(buf, ",", &save); t;
	     t = strtok_r(NULL, ",", &save))
		cJSON_AddItemToArray(a, cJSON_CreateString(t));
}

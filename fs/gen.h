/* gen.h - the read-only generated nodes of fs/, table-driven (gen.c).
 *
 * What MOUNT/, NAME/, NAME/ports/, MOUNT/templates/ and MOUNT/.tags/
 * have in common: fixed entries described by a table (name, kind,
 * capability), lookups answered with the kind's attributes, listings
 * that start with "." and "..", and text files whose content is made at
 * open, read with direct I/O (never stale page cache) and freed at
 * release.
 */
#ifndef SBXFS_FS_GEN_H
#define SBXFS_FS_GEN_H

#include "fs/fs_int.h"

/* One fixed entry of a generated directory. */
struct fs_gen_ent {
	const char *name;
	enum fs_kind kind;
	unsigned cap;	/* backend capability it needs, 0 = always */
	mode_t mode;	/* 0: the kind's attributes (fs_stat_node); else
			 * synthetic ones with this mode */
};
#define FS_GEN_N(t) (sizeof(t) / sizeof((t)[0]))

/* The entry of t called name, if the backend has its capability. */
const struct fs_gen_ent *fs_gen_find(struct fs *fs,
				     const struct fs_gen_ent *t, size_t n,
				     const char *name);
/* Reply to a lookup with node ino: the kind's attributes, st_size when
 * size > 0, entry and attributes kept 1 s. */
void fs_gen_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
		  off_t size);

/* A new listing holding "." (ino) and ".." (parent), both directories;
 * NULL when out of memory.  *err: 0 or what adding them gave (pass it on
 * to fs_dir_open_reply, which frees the listing on error). */
struct fs_dir *fs_gen_dir(struct fs *fs, fuse_ino_t ino, fuse_ino_t parent,
			  int *err);
/* Add t's entries that the backend has, as inodes of sandbox slot/gen
 * (0 and 0 outside a sandbox). */
int fs_gen_dir_table(struct fs *fs, struct fs_dir *d,
		     const struct fs_gen_ent *t, size_t n, unsigned slot,
		     unsigned gen);

/* Text made at open.  fs_gen_rdonly: true when fi opens for reading only,
 * else replies EACCES.  fs_gen_open: reply to the open with a private
 * copy of len bytes of text followed by tail (a string, may be ""), read
 * with direct I/O by fs_gen_read, freed by fs_gen_release. */
bool fs_gen_rdonly(fuse_req_t req, struct fuse_file_info *fi);
void fs_gen_open(fuse_req_t req, struct fuse_file_info *fi, const char *text,
		 size_t len, const char *tail);
void fs_gen_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi);
void fs_gen_release(fuse_req_t req, fuse_ino_t ino,
		    struct fuse_file_info *fi);
/* getattr of a sandbox's file made at open: the sandbox's error when it
 * is gone, else size 0 and attributes not kept. */
void fs_gen_sb_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi);

#endif

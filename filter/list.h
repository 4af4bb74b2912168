/* filter/list.h: one intrusive doubly linked list for every list of moat
 * (listeners, connections, clients, waiters, cache LRUs), after the Linux
 * list and libuv's uv__queue. In the lowest room so every room can use it.
 *
 * An object embeds a moat_list_t node and is found again from it with
 * container_of. A list is a moat_list_t head whose next and prev point at
 * itself when empty. Unlinking is O(1) and needs no walk; a node that was
 * unlinked points at itself, so moat_list_remove() twice is harmless and
 * moat_list_linked() tells whether a node is on a list. Every node must be
 * initialised (moat_list_init) or inserted before it is removed.
 */
#ifndef MOAT_FILTER_LIST_H
#define MOAT_FILTER_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct moat_list {
    struct moat_list *prev, *next;
} moat_list_t;

/* The object of type that holds member at ptr. */
#ifndef container_of
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#endif

/* An empty list, or a node on no list. */
static inline void moat_list_init(moat_list_t *h)
{
    h->prev = h->next = h;
}

static inline bool moat_list_empty(const moat_list_t *h)
{
    return h->next == h;
}

/* Whether node n is on a list (n was initialised or inserted). */
static inline bool moat_list_linked(const moat_list_t *n)
{
    return n->next != n;
}

/* Insert n first on h. */
static inline void moat_list_push(moat_list_t *h, moat_list_t *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

/* Insert n last on h. */
static inline void moat_list_append(moat_list_t *h, moat_list_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* Take n off its list (no-op when it is on none). */
static inline void moat_list_remove(moat_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* The first node of h, or NULL when h is empty. */
static inline moat_list_t *moat_list_first(const moat_list_t *h)
{
    return h->next == h ? NULL : h->next;
}

/* Move every node of from (left empty) onto the empty list to. */
static inline void moat_list_move(moat_list_t *from, moat_list_t *to)
{
    if (moat_list_empty(from)) {
        moat_list_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    moat_list_init(from);
}

/* Every node it of h, first to last; the body may unlink it (and only it):
 * nx is read before the body runs. */
#define moat_list_foreach_safe(it, nx, h)                                                          \
    for (moat_list_t *it = (h)->next, *nx = it->next; it != (h); it = nx, nx = it->next)

/* Every node it of h, first to last; the body must not unlink it. */
#define moat_list_foreach(it, h) for (moat_list_t *it = (h)->next; it != (h); it = it->next)

#endif

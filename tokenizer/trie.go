package tokenizer

// pieceTrie is a byte trie over piece texts, for the two searches encoding makes: every
// piece that starts at a position (Viterbi), and the longest user-defined piece there.
// Nodes are flattened after building; each node's edges are sorted by byte, and the
// root, which every search visits, has a direct 256-entry table.

import (
	"slices"
	"strings"
)

type trieNode struct {
	firstEdge, numEdges int32
	value               int32 // piece id, or -1
}

type trieEdge struct {
	label byte
	child int32
}

type pieceTrie struct {
	nodes []trieNode
	edges []trieEdge
	root  [256]int32 // child of the root per byte, -1 if none
}

// buildTrie indexes texts[i] under value ids[i]; texts are distinct. An empty input gives
// a trie that matches nothing; a nil *pieceTrie does too. It sorts the texts and builds
// depth first from sorted ranges, so memory is the flattened trie and nothing more.
func buildTrie(texts []string, ids []int32) *pieceTrie {
	order := make([]int, len(texts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(texts[a], texts[b]) })
	t := &pieceTrie{nodes: []trieNode{{value: -1}}}
	t.fill(0, texts, ids, order, 0)
	for i := range t.root {
		t.root[i] = -1
	}
	for _, e := range t.edges[:t.nodes[0].numEdges] {
		t.root[e.label] = e.child
	}
	return t
}

// fill gives node the texts order[...] (sorted, all sharing their first depth bytes):
// the one that ends here is its value, the rest go to one child per next byte.
func (t *pieceTrie) fill(node int32, texts []string, ids []int32, order []int, depth int) {
	if len(order) > 0 && len(texts[order[0]]) == depth {
		t.nodes[node].value = ids[order[0]]
		order = order[1:]
	}
	// Children's edges are contiguous: all of them are added before any child is filled.
	first := int32(len(t.edges))
	var groups [][]int
	for len(order) > 0 {
		c := texts[order[0]][depth]
		n := 1
		for n < len(order) && texts[order[n]][depth] == c {
			n++
		}
		t.edges = append(t.edges, trieEdge{label: c, child: int32(len(t.nodes))})
		t.nodes = append(t.nodes, trieNode{value: -1})
		groups = append(groups, order[:n])
		order = order[n:]
	}
	t.nodes[node].firstEdge, t.nodes[node].numEdges = first, int32(len(groups))
	for i, g := range groups {
		t.fill(t.edges[first+int32(i)].child, texts, ids, g, depth+1)
	}
}

// child follows the edge labelled c from node, or returns -1.
func (t *pieceTrie) child(node int32, c byte) int32 {
	if node == 0 {
		return t.root[c]
	}
	n := t.nodes[node]
	edges := t.edges[n.firstEdge : n.firstEdge+n.numEdges]
	lo, hi := 0, len(edges)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if edges[mid].label < c {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(edges) && edges[lo].label == c {
		return edges[lo].child
	}
	return -1
}

// longestPrefix is the length of the longest text in the trie that s starts with, 0 if none.
func (t *pieceTrie) longestPrefix(s string) int {
	if t == nil {
		return 0
	}
	best := 0
	node := int32(0)
	for i := 0; i < len(s); i++ {
		if node = t.child(node, s[i]); node < 0 {
			break
		}
		if t.nodes[node].value >= 0 {
			best = i + 1
		}
	}
	return best
}

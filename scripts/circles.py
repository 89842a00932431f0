#!/usr/bin/env python3
# Import circles between the crate's files: every `crate::`/`super::` path outside comments and
# tests is an edge to the module it names; prints the strongly connected components (none, ideally).
import os,re,sys
root='src'
mods={}
for d,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or d.startswith('src/bin'): continue
        p=os.path.join(d,f); rel=os.path.relpath(p,root)[:-3].split('/')
        if rel[-1] in('mod','lib'): rel=rel[:-1]
        mods[tuple(rel)]=p
def resolve(path):
    path=tuple(path)
    while path and path not in mods: path=path[:-1]
    return path
edges={m:set() for m in mods}
for m,p in mods.items():
    src=open(p).read()
    src=src.split('#[cfg(test)]')[0]
    src=re.sub(r'//.*','',src)
    ismod=p.endswith('mod.rs') or p.endswith('lib.rs')
    for mt in re.finditer(r'\b((?:crate|super)(?:::\w+)+)',src):
        parts=mt.group(1).split('::')
        base=list(m) if ismod else list(m[:-1])
        if parts[0]=='crate': cur=[]; parts=parts[1:]
        else:
            cur=list(m) if ismod else list(m)
            cur=cur[:-1] if False else cur
            # super from file m: parent of m
            cur=list(m[:-1])
            parts=parts[1:]
            while parts and parts[0]=='super': cur=cur[:-1]; parts=parts[1:]
        t=resolve(cur+parts)
        if t!=m and t!=() and not (len(t)<len(m) and m[:len(t)]==t): edges[m].add(t)
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: sccs.append(comp)
for v in mods:
    if v not in idx: sc(v)
print(len(mods),'modules;',len(sccs),'circles')
for s in sccs: print(['::'.join(x) for x in s])

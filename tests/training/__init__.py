"""Training-side tests: conversion, the shipped model on real photos, the benchmark smoke run."""
